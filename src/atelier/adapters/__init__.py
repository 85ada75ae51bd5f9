"""Infrastructure behind small Protocols declared in `core`, chosen by settings."""
