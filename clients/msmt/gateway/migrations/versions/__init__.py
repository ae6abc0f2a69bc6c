"""The gateway's schema revisions, oldest first."""
