"""Image bytes: decoding and sniffing, the local cache, object stores, and the image store."""
