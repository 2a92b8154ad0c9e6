"""The example Scrapy project of this checkout: the ``alexa`` and ``maoyan`` crawlers.

Not part of the scrapy-fleet plugin (``setup.py`` packages only ``scrapy_fleet``): it is
what a user project looks like. ``scrapy.cfg`` names its settings, and Scrapy puts the
directory of ``scrapy.cfg`` on ``sys.path``, so ``scrapy crawl alexa`` works from the
repository root.
"""
