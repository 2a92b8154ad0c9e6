"""Reading top-sites lists: the real Alexa and Tranco heads, and every kind of bad row."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conftest import FIXTURES
from fleet_examples.toplist import BadRow, SkippedRow, TopSite, cache_path, is_remote, iter_rows, open_list_lines, parse_row

ALEXA = FIXTURES / "toplists" / "alexa_top-1m_head2000_SoumyaParida-webcrawlTest.csv"
TRANCO = FIXTURES / "toplists" / "tranco_top-1m_head2000_kmikholap-dns-gen.csv"


@pytest.mark.parametrize("path", [ALEXA, TRANCO], ids=["alexa", "tranco"])
def test_real_list_heads_parse_completely(path: Path) -> None:
    rows = list(iter_rows(open_list_lines(path)))
    assert len(rows) == 2000
    assert all(isinstance(row, TopSite) for row in rows)
    assert [row.rank for row in rows] == list(range(1, 2001))
    assert rows[0].domain == "google.com" and rows[0].url == "http://google.com/"


def test_real_rows_of_note() -> None:
    alexa = {row.rank: row for row in iter_rows(open_list_lines(ALEXA))}
    assert alexa[82].domain == "espn.go.com"
    assert alexa[801].url == "http://www.gov.uk/"
    assert alexa[1684].domain == "couchtuner.eu.com"
    tranco = {row.rank: row for row in iter_rows(open_list_lines(TRANCO))}
    assert tranco[1737].domain == "xn--l3cg7a8a0cwa3f.com"
    assert tranco[1738].domain == "tjsp.jus.br"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("3041,zhidao.baidu.com/user/admin", (3041, "zhidao.baidu.com/user/admin", "http://zhidao.baidu.com/user/admin")),
        ("9184,erogamescape.dyndns.org/~ap2", (9184, "erogamescape.dyndns.org/~ap2", "http://erogamescape.dyndns.org/~ap2")),
        ("20073,youtube.com/user/SuperSharij", (20073, "youtube.com/user/SuperSharij", "http://youtube.com/user/SuperSharij")),
        ("3722,204.12.226.68", (3722, "204.12.226.68", "http://204.12.226.68/")),
        ("12915,xn--frstrowsports-39b.eu", (12915, "xn--frstrowsports-39b.eu", "http://xn--frstrowsports-39b.eu/")),
        ("7,Bücher.DE", (7, "xn--bcher-kva.de", "http://xn--bcher-kva.de/")),
        ("8,例子.测试", (8, "xn--fsqu00a.xn--0zwm56d", "http://xn--fsqu00a.xn--0zwm56d/")),
        ("9,WWW.Example.COM.", (9, "www.example.com", "http://www.example.com/")),
        ("1,localhost.test:3000\r\n", (1, "localhost.test:3000", "http://localhost.test:3000/")),
        ("\ufeff1,google.com", (1, "google.com", "http://google.com/")),
        ("10,example.com/路径 ", (10, "example.com/路径", "http://example.com/%E8%B7%AF%E5%BE%84")),
    ],
)
def test_valid_rows(line: str, expected: tuple[int, str, str]) -> None:
    assert parse_row(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "blank"),
        ("   \r\n", "blank"),
        ("49014,_wildcard_.ph", "bad domain"),
        ("1,localhost", "bad domain"),
        ("1,foo..com", "bad domain"),
        ("1,-foo.com", "bad domain"),
        ("1,1.2.3", "bad domain"),
        ("1,xn--zz.com", "bad punycode"),
        ("1,exa mple.com", "bad domain"),
        ("1,http://example.com", "bad domain"),
        ("1,example.com:99999", "bad port"),
        ("0,example.com", "bad rank"),
        ("-3,example.com", "bad rank"),
        ("one,example.com", "bad rank"),
        ("1,", "empty domain"),
        ("1,example.com,extra", "not rank,domain"),
        ("garbage", "not rank,domain"),
        (",", "bad rank"),
    ],
)
def test_bad_rows(line: str, reason: str) -> None:
    with pytest.raises(BadRow) as caught:
        parse_row(line)
    assert str(caught.value).startswith(reason)


def test_crafted_list_header_duplicates_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes("\ufeffRANK,DOMAIN\r\n1,a.com\r\n\r\n2,A.com\r\n3,b.com/x\r\n4,b.com\r\n\x00\xff junk\r\n5,c.com".encode("utf-8"))
    rows = list(iter_rows(open_list_lines(path)))
    assert [(type(r).__name__, r.line_no) for r in rows] == [
        ("SkippedRow", 1), ("TopSite", 2), ("SkippedRow", 3), ("SkippedRow", 4),
        ("TopSite", 5), ("TopSite", 6), ("SkippedRow", 7), ("TopSite", 8),
    ]  # fmt: skip
    assert [r.reason for r in rows if isinstance(r, SkippedRow)] == ["header", "blank", "duplicate", "not rank,domain"]
    assert [r.domain for r in rows if isinstance(r, TopSite)] == ["a.com", "b.com/x", "b.com", "c.com"]


def test_invalid_utf8_is_a_bad_row_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"1,a.com\n2,\xff\xfe.com\n3,c.com\n")
    kinds = [type(row).__name__ for row in iter_rows(open_list_lines(path))]
    assert kinds == ["TopSite", "SkippedRow", "TopSite"]


def test_zip_is_read_through_its_csv_member(tmp_path: Path) -> None:
    archive = tmp_path / "top-1m.csv.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.txt", "not the list")
        zf.writestr("top-1m.csv", TRANCO.read_bytes())
    rows = list(iter_rows(open_list_lines(archive)))
    assert len(rows) == 2000 and rows[1].domain == "microsoft.com"


def test_a_million_rows_stream_lazily(tmp_path: Path) -> None:
    archive = tmp_path / "top-1m.csv.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top-1m.csv", "".join(f"{i},site{i}.com\n" for i in range(1, 1_000_001)))
    rows = iter_rows(open_list_lines(archive))
    first = next(rows)
    assert first.domain == "site1.com"  # nothing read beyond what was asked for
    assert sum(1 for _ in rows) == 999_999


def test_remote_locations_and_cache_names(tmp_path: Path) -> None:
    assert is_remote("https://tranco-list.eu/top-1m.csv.zip")
    assert is_remote("file:///tmp/x.csv")
    assert not is_remote("/tmp/x.csv") and not is_remote("top-1m.csv")
    one = cache_path("https://tranco-list.eu/top-1m.csv.zip", tmp_path)
    other = cache_path("https://example.org/top-1m.csv.zip", tmp_path)
    assert one.name.endswith("top-1m.csv.zip") and one != other and one.parent == tmp_path / "lists"
