"""ASR model components that extend ESPnet's, and how ESPnet finds them.

Modules: `encoder/` (the Conformer with a selectable, padding-aware conv-module norm and its
masked norms), `registration` (adds the encoders to ESPnet's encoder choices; the site hook for
ESPnet's own tools), `import_hook` (registration and a quiet g2p_en import, installed by
``import espnet_ext``).
"""
