"""Open WebUI's chats: find the base64 images they hold and move them into PicGate."""
