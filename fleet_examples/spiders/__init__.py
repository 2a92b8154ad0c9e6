"""The example spiders: ``alexa`` (a top-sites list) and ``maoyan`` (the Maoyan TOP100 board)."""
