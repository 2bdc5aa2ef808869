"""MovieLens readers: the real ML-100K from the recbole wheel, and small ML-1M / ML-20M /
RecBole-layout files written here."""
from __future__ import annotations

import importlib.resources
import importlib.util

import numpy as np
import pytest

from benchmark.data.readers import BadLineError, InputError, PrepareConfig, prepare_dataset


def prep(inp, out, **kw):
    return prepare_dataset(PrepareConfig("movielens", [str(inp)], str(out), **kw))


@pytest.fixture(scope="module")
def ml100k_dir():
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed: `pip install --no-deps recbole==1.2.1` ships "
                    "MovieLens-100K (make install does this)")
    return importlib.resources.files("recbole") / "dataset_example" / "ml-100k"


def test_ml100k_from_the_recbole_wheel(ml100k_dir, tmp_path):
    ds = prep(ml100k_dir, tmp_path / "ml", block_bytes=256 << 10)
    m = ds.manifest
    assert m.name == "ml_100k" and m.num_rows == 100_000
    card = dict(zip(m.feature_names, m.cardinalities))
    assert card["user_id"] == 943 and card["item_id"] == 1682
    assert round(float(np.mean(ds.labels)), 3) == 0.554            # rating >= 4
    assert int(np.sum(ds.labels)) == 55_375
    assert m.feature_names[:7] == ["user_id", "item_id", "age", "gender", "occupation",
                                   "zip_code", "release_year"]
    # genres: counted independently from the item file
    items = (ml100k_dir / "ml-100k.item").read_text().splitlines()[1:]
    genre_lists = [line.split("\t")[3].split() for line in items]
    vocab = list(dict.fromkeys(g for gs in genre_lists for g in gs))
    slots = max(len(gs) for gs in genre_lists)
    assert m.feature_names[7:] == [f"genre_{k}" for k in range(1, slots + 1)]
    assert card["genre_1"] == len(vocab) + 1 and m.source["genres"]["vocabulary"] == vocab
    assert card["gender"] == 2 and m.stats["ratings_without_item_row"] == 0
    assert m.splits == {"train": [0, 80_000], "val": [80_000, 90_000], "test": [90_000, 100_000]}


def test_ml100k_time_split_sorts_by_timestamp(ml100k_dir, tmp_path):
    rows = [line.split("\t") for line in
            (ml100k_dir / "ml-100k.inter").read_text().splitlines()[1:]]
    stamps = np.array([int(r[3]) for r in rows])
    labels = np.array([float(r[2]) >= 4 for r in rows], dtype=np.uint8)
    ds = prep(ml100k_dir, tmp_path / "ml", split="time", genres="first")
    np.testing.assert_array_equal(ds.labels, labels[np.argsort(stamps, kind="stable")])
    assert ds.manifest.feature_names[-1] == "genre"
    assert ds.manifest.source["split"]["rule"] == "time"


def write_dir(d, files):
    """A dataset directory holding ``files`` (name -> text, or bytes written as they are)."""
    d.mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (d / name).write_bytes(content)
        else:
            (d / name).write_text(content)
    return d


# four ML-1M ratings; in time order (3,661) (2,1193) (1,1193) (1,661), labels 0 1 1 0
ML1M_RATINGS = ("1::1193::5::978300760\n1::661::3::978302109\n"
                "2::1193::4::978298413\n3::661::1::978297000\n")


def write_recbole(d, inter, users, items):
    d.mkdir()
    (d / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                 + "".join("\t".join(map(str, r)) + "\n" for r in inter))
    (d / "toy.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\t"
                                "zip_code:token\n" + "".join("\t".join(r) + "\n" for r in users))
    (d / "toy.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\t"
                                "class:token_seq\n" + "".join("\t".join(r) + "\n" for r in items))


INTER = [(7, 50, 5, 300), (7, 51, 3, 100), (9, 50, 4.5, 200), (8, 52, 1, 400),
         (9, 53, 4, 50), (7, 53, 2, 250)]
USERS = [("7", "24", "M", "technician", "85711"), ("9", "53", "F", "other", "94043")]
ITEMS = [("50", "Star Wars", "1977", "Action Adventure Romance Sci-Fi War"),
         ("51", "Toy Story", "1995", "Animation Children's Comedy"),
         ("52", "Heat", "1995", "Action")]


def test_recbole_layout_side_features_and_genre_slots(tmp_path):
    write_recbole(tmp_path / "toy", INTER, USERS, ITEMS)
    ds = prep(tmp_path / "toy", tmp_path / "out", genre_slots=3, fractions=(1.0, 0.0, 0.0))
    m = ds.manifest
    assert m.name == "ml_100k"             # the RecBole layout is ML-100K's
    # random split with train = 1.0 keeps all rows, shuffled: map back through user/item ids
    assert m.feature_names == ["user_id", "item_id", "age", "gender", "occupation", "zip_code",
                               "release_year", "genre_1", "genre_2", "genre_3"]
    f = {n: np.asarray(ds.ids[:, j]) for j, n in enumerate(m.feature_names)}
    user_id = {u: i for i, u in enumerate(dict.fromkeys(r[0] for r in INTER))}   # first seen
    item_id = {it: i for i, it in enumerate(dict.fromkeys(r[1] for r in INTER))}
    # genre ids: 0 = empty slot, then first appearance in the item table
    gid = {g: i + 1 for i, g in enumerate(dict.fromkeys(
        g for it in ITEMS for g in it[3].split()))}
    want = {}
    for u, it, rating, _ in INTER:
        genres = next((x[3].split() for x in ITEMS if x[0] == str(it)), [])
        slots = [gid[g] for g in genres[:3]] + [0] * (3 - len(genres[:3]))
        want[(user_id[u], item_id[it])] = (int(rating >= 4), slots)
    got = {(int(a), int(b)): (int(lb), [int(g1), int(g2), int(g3)]) for a, b, lb, g1, g2, g3 in
           zip(f["user_id"], f["item_id"], ds.labels, f["genre_1"], f["genre_2"], f["genre_3"])}
    assert got == want
    assert m.cardinalities[m.feature_names.index("genre_1")] == len(gid) + 1
    assert m.stats["movies_with_genres_cut"] == 1              # Star Wars has 5 genres
    assert m.stats["ratings_without_user_row"] == 1            # user 8
    assert m.stats["ratings_without_item_row"] == 2            # item 53, rated twice
    # user 8 and item 53 have no side row: their side features are the shared "missing" value
    u8 = f["user_id"] == user_id[8]
    assert len(set(f["age"][u8])) == 1 and f["age"][u8][0] not in f["age"][~u8]
    i53 = f["item_id"] == item_id[53]
    assert (f["genre_1"][i53] == 0).all()
    assert m.source["genres"]["padding_id"] == 0 and m.source["genres"]["slots"] == 3


def test_recbole_bad_rating_and_bad_side_line(tmp_path):
    inter = INTER[:3] + [(7, 52, "four", 10)] + INTER[3:]
    write_recbole(tmp_path / "toy", inter, USERS, ITEMS)
    with pytest.raises(BadLineError) as e:
        prep(tmp_path / "toy", tmp_path / "out")
    assert e.value.line == 5 and e.value.reason.startswith("bad rating in column rating:float")
    write_recbole(tmp_path / "toy2", INTER, USERS + [("10", "22", "M")], ITEMS)
    with pytest.raises(BadLineError, match=r"toy.user:4: wrong column count"):
        prep(tmp_path / "toy2", tmp_path / "out")
    ds = prep(tmp_path / "toy2", tmp_path / "out", on_bad_lines="skip")
    assert ds.manifest.stats["bad_lines"]["examples"] == {"wrong column count": ["toy.user:4"]}


def test_ml1m_double_colon_layout(tmp_path):
    d = write_dir(tmp_path / "ml-1m", {
        "ratings.dat": ML1M_RATINGS,
        "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n",
        "movies.dat": ("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                       "661::Caf\xe9 (1996)::Animation|Children's|Musical\n").encode("latin-1")})
    ds = prep(d, tmp_path / "out", split="time", genres="first")
    m = ds.manifest
    assert m.name == "ml_1m" and m.source["layout"] == "ml1m"
    assert m.feature_names == ["user_id", "item_id", "gender", "age", "occupation",
                               "zip_code", "genre"]
    # time order: 978297000 (3,661), 978298413 (2,1193), 978300760 (1,1193), 978302109 (1,661)
    assert ds.labels.tolist() == [0, 1, 1, 0]
    f = {n: ds.ids[:, j].tolist() for j, n in enumerate(m.feature_names)}
    # ids are first-seen in input order: users 1, 2, 3 -> 0, 1, 2; items 1193, 661 -> 0, 1
    assert f["user_id"] == [2, 1, 0, 0] and f["item_id"] == [1, 0, 0, 1]
    assert f["gender"] == [1, 1, 0, 0]      # F first seen -> 0
    assert f["genre"] == [1, 0, 0, 1]       # Drama first seen, then Animation
    bad = d / "ratings.dat"
    bad.write_text(bad.read_text() + "4:1193::5::978300760\n")
    with pytest.raises(BadLineError, match=r"ratings.dat:5: wrong column count"):
        prep(d, tmp_path / "out2")


def test_ml20m_csv_with_half_stars_and_quoted_titles(tmp_path):
    d = write_dir(tmp_path / "ml-20m", {
        "ratings.csv": ("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n"
                        "1,29,4.0,1112484676\n2,2,4.5,974820889\n3,30,0.5,1000000000\n"),
        "movies.csv": ('movieId,title,genres\n2,Jumanji (1995),Adventure|Children\n'
                       '29,"City of Lost Children, The (1995)",Adventure|Drama|Sci-Fi\n'
                       '30,Shanghai Triad (1995),(no genres listed)\n')})
    ds = prep(d / "ratings.csv", tmp_path / "out", fractions=(0.5, 0.25, 0.25), seed=3)
    m = ds.manifest
    assert m.name == "ml_20m" and m.feature_names == ["user_id", "item_id", "genre_1",
                                                      "genre_2", "genre_3"]
    assert m.splits == {"train": [0, 2], "val": [2, 3], "test": [3, 4]}
    f = {n: ds.ids[:, j].tolist() for j, n in enumerate(m.feature_names)}
    # genre ids: Adventure 1, Children 2, Drama 3, Sci-Fi 4, (no genres listed) 5
    rows = {(u, it): (lb, g) for u, it, lb, *g in zip(f["user_id"], f["item_id"], ds.labels,
                                                      f["genre_1"], f["genre_2"], f["genre_3"])}
    assert rows == {(0, 0): (0, [1, 2, 0]), (0, 1): (1, [1, 3, 4]), (1, 0): (1, [1, 2, 0]),
                    (2, 2): (0, [5, 0, 0])}
    with pytest.raises(InputError, match="--positive-rating applies to movielens only"):
        prepare_dataset(PrepareConfig("avazu", [str(d)], str(tmp_path / "x"),
                                      positive_rating=3.0))
    ds = prep(d, tmp_path / "out3", positive_rating=3.5, fractions=(1.0, 0.0, 0.0))
    assert sorted(ds.labels.tolist()) == [0, 1, 1, 1]


def test_layout_and_option_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot tell the MovieLens layout"):
        prep(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InputError, match="no ml1m ratings file"):
        prep(tmp_path / "empty", tmp_path / "out", layout="ml1m")
    write_recbole(tmp_path / "toy", INTER, USERS, ITEMS)
    with pytest.raises(InputError, match="--genre-slots 0 must be >= 1"):
        prep(tmp_path / "toy", tmp_path / "out", genre_slots=0)
    with pytest.raises(InputError, match="--genre-slots applies to --genres multi only"):
        prep(tmp_path / "toy", tmp_path / "out", genre_slots=2, genres="first")
    with pytest.raises(InputError, match="--split days is not supported"):
        prep(tmp_path / "toy", tmp_path / "out", split="days")
    assert not (tmp_path / "out").exists()


def test_rating_outside_the_scale_is_a_bad_line_not_a_positive(tmp_path):
    inter = INTER[:2] + [(7, 52, 9, 10)] + INTER[2:]          # line 4: a rating of 9
    write_recbole(tmp_path / "toy", inter, USERS, ITEMS)
    with pytest.raises(BadLineError) as e:
        prep(tmp_path / "toy", tmp_path / "out")
    assert e.value.line == 4 and e.value.reason.startswith("rating out of range 1..5")
    ds = prep(tmp_path / "toy", tmp_path / "out", on_bad_lines="skip")
    assert ds.manifest.num_rows == len(INTER)
    assert ds.manifest.stats["bad_lines"]["by_reason"] == {"rating out of range 1..5": 1}
    d = write_dir(tmp_path / "ml-20m",                      # half stars from 0.5 there
                  {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,0.5,10\n1,3,5.5,11\n"})
    with pytest.raises(BadLineError, match=r"ratings.csv:3: rating out of range 0.5..5"):
        prep(d, tmp_path / "out2")


def test_ratings_file_is_recognised_by_content_not_name(tmp_path):
    d = write_dir(tmp_path / "mine", {"my_ratings.txt": ML1M_RATINGS})
    ds = prep(d / "my_ratings.txt", tmp_path / "out", split="time")
    assert ds.manifest.source["layout"] == "ml1m"
    assert ds.labels.tolist() == [0, 1, 1, 0]
    (d / "export.csv").write_text("userId,movieId,rating,timestamp\n1,2,4.5,10\n1,3,2,11\n"
                                  "2,3,3.5,12\n")
    assert prep(d / "export.csv", tmp_path / "out2").manifest.source["layout"] == "ml20m"
    (d / "odd.txt").write_text("u i r t\n1 2 3 4\n")
    with pytest.raises(InputError, match=r"odd.txt: cannot tell the MovieLens layout from its "
                                         r"first line 'u i r t'"):
        prep(d / "odd.txt", tmp_path / "out3")
