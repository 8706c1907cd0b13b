"""Reading and writing video, images and audio."""
