"""Conditioning mechanisms (HunyuanCustom identity / audio / editing, Avatar, HuMo) plugging into the DiT
through its extension points (``hcjax.models.extensions``), and the inputs they read (``cond=``)."""

from hcjax.conditioning.custom_cond import CustomCond

__all__ = ["CustomCond"]
