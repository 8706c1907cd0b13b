"""Conditioning mechanisms (HunyuanCustom identity / audio / editing, Avatar, HuMo) plugging into the DiT
through its extension points (``hcjax.models.extensions``), and the inputs they read (``cond=``)."""

from hcjax.conditioning.avatar_cond import AvatarCond
from hcjax.conditioning.custom_cond import CustomCond
from hcjax.conditioning.humo_cond import HumoCond

__all__ = ["AvatarCond", "CustomCond", "HumoCond"]
