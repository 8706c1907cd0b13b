"""Conditioning mechanisms (HunyuanCustom identity / audio / editing, Avatar, HuMo) plugging into the DiT
through its extension points (``hcjax.models.extensions``)."""
