"""lance-quant ComfyUI node pack. Install: link this folder into ComfyUI/custom_nodes (e.g.
`ln -s $PWD/comfyui ComfyUI/custom_nodes/lance_quant`) and `pip install .` the lance_quant package into
ComfyUI's Python. See README.md ("ComfyUI")."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
