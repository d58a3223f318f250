"""Datasets of clips: synthetic sprites and folders of video files."""
