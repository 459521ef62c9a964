"""Session service of the Tab Organizer platform."""

__version__ = "0.1.0"
