"""Another project's spider that happens to share linkspider.py's name ("links")."""

from spiders.linkspider import LinkSpider as TheOtherProjectsSpider


class LinkSpider(TheOtherProjectsSpider):  # same name, another class: otherlinks.LinkSpider
    pass
