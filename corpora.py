"""The corpora behind --dataset: where they live in corpora/, where they come from, their checksums.

    corpora/multi30k/<split>.{de,en}.gz              Multi30k task 1, raw text
    corpora/train.tags.de-en.{de,en}                 IWSLT 2016 training text
    corpora/IWSLT16.TED.<split>.de-en.{de,en}.xml    IWSLT 2016 dev and test sets

download.py fetches them; the settings take their paths from corpus_paths().
"""
import os
import shutil
import tarfile
import zlib

from files import checksum_ok, discard
from messages import UserError, note

CORPORA = "corpora"  # where download.py puts the preset datasets

# The preset corpora behind --dataset: their dev split, default test split and
# every split that can be tested on (corpus_paths() gives the file names).
DATASETS = {
    "iwslt2016": {"dev": "tst2013", "test": "tst2014",
                  "splits": ("dev2010", "tst2010", "tst2011", "tst2012", "tst2013", "tst2014")},
    "multi30k": {"dev": "val", "test": "test_2016_flickr",
                 "splits": ("val", "test_2016_flickr", "test_2017_flickr", "test_2018_flickr",
                            "test_2017_mscoco")},
}


def corpus_paths(dataset, split):
    """(German, English) paths of one split ("train" or a test split) of a preset dataset."""
    if dataset == "multi30k":
        return tuple(os.path.join(CORPORA, "multi30k", f"{split}.{lang}.gz") for lang in ("de", "en"))
    if split == "train":
        return tuple(os.path.join(CORPORA, f"train.tags.de-en.{lang}") for lang in ("de", "en"))
    return tuple(os.path.join(CORPORA, f"IWSLT16.TED.{split}.de-en.{lang}.xml") for lang in ("de", "en"))


# Multi30k task 1, raw text, from the dataset's repository. A mirror must hold
# the files under the same relative path, <base>data/task1/raw/train.de.gz.
MULTI30K_BASES = ("https://raw.githubusercontent.com/multi30k/dataset/master/",
                  "https://github.com/multi30k/dataset/raw/master/")
MULTI30K_DIR = "data/task1/raw/"
# sha256 where it was computed from a copy of the file (whose md5 also equals the
# published one); the published md5 (torchtext, sacrebleu) for the other files.
MULTI30K_CHECKSUMS = {
    "train.de.gz": "sha256:726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "sha256:d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "sha256:f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "sha256:14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "sha256:9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "sha256:611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2017_flickr.de.gz": "md5:6a8d5c87f6ae19e3d35681aa6fd16571",
    "test_2017_flickr.en.gz": "md5:005396bac545d880abe6f00bbb7dbbb4",
    "test_2018_flickr.de.gz": "md5:87e00327083dd69feaa029a8f7c1a047",
    "test_2018_flickr.en.gz": "md5:a152878809942757a55ce087073486b8",
    "test_2017_mscoco.de.gz": "md5:e8cd6ec2bc8a11fc846fa48a46e3d0bb",
    "test_2017_mscoco.en.gz": "md5:a7b684e0edbef1d4a23660c8e8e743fd",
}
MULTI30K_NEEDED = ("train", "val", "test_2016_flickr")  # the preset's own splits; --from must have them

# IWSLT 2016: the campaign archive 2016-01.tgz holds texts/de/en/de-en.tgz, which
# holds de-en/<the files>. WIT3 served the inner archive by itself (no published
# checksum: its files are checked instead); a Google Drive copy of the whole
# archive, the one torchtext uses, is checked by its md5. A mirror may hold either,
# as <base>texts/de/en/de-en.tgz or <base>2016-01.tgz.
IWSLT_PAIR = "texts/de/en/de-en.tgz"
IWSLT_WHOLE = "2016-01.tgz"
IWSLT_WHOLE_MD5 = "md5:c393ed3fc2a1b0f004b3331043f615ae"
IWSLT_SOURCES = (  # (address, checksum of what it serves, file name while it is unpacked)
    ("https://wit3.fbk.eu/archive/2016-01/" + IWSLT_PAIR, None, "de-en.tgz"),
    ("https://drive.google.com/uc?export=download&id=1l5y6Giag9aRPwGtuZHswh3w5v3qEz8D8", IWSLT_WHOLE_MD5,
     IWSLT_WHOLE),
)
# sha256 of the released dev and test files, computed from copies of them. The
# training text and tst2014 have no known checksum outside the whole archive.
IWSLT_CHECKSUMS = {
    "IWSLT16.TED.dev2010.de-en.de.xml": "sha256:669c478b2c76f8457fb78f87fd3a6db2d84d47bb635b178bcd7233facb20fd00",
    "IWSLT16.TED.dev2010.de-en.en.xml": "sha256:6c65bd89a391a0c3ce855e04169b05eba49a40c9189149dd60a20b62ad51bcb1",
    "IWSLT16.TED.tst2010.de-en.de.xml": "sha256:26a5f366f2f90c05f39f32f4923cde7ef40cc1d91701630912c95486197fc264",
    "IWSLT16.TED.tst2010.de-en.en.xml": "sha256:39861d2c211341aa83664c153a307489aa4b57408ec2c59cfcb1adb10c7786d0",
    "IWSLT16.TED.tst2011.de-en.de.xml": "sha256:9ea773ecd3235ed60c7b24a9ed0a78360ebf3c433e1a04f8793ce5cacd343abf",
    "IWSLT16.TED.tst2011.de-en.en.xml": "sha256:f722f875a666c536c2bc905fd808ee9eb435dd7ba33bdd6f7596992dd9c0c6e3",
    "IWSLT16.TED.tst2012.de-en.de.xml": "sha256:f020f769a8e63a91990ff89ea6f40f7416d32bd8f331fe3cc2bc4137b5c99ef0",
    "IWSLT16.TED.tst2012.de-en.en.xml": "sha256:d6afe2c04f84833ecdb293fe9b8ad7ad87b1a04d1397106cb3fb14aa8d788555",
    "IWSLT16.TED.tst2013.de-en.de.xml": "sha256:5b74a7292fcb8f71cf6de9bcf9c9a24b87ab2904fd8c4b73c1e81f353f79b407",
    "IWSLT16.TED.tst2013.de-en.en.xml": "sha256:479fec5ca4c5e8b8fe7932f639909d925987a9fb37db17e425aacf64707c70bb",
}


def present(path, checksum):
    """Whether `path` is there and (when a checksum is known) verifies; says so when it does not."""
    if not os.path.isfile(path):
        return False
    if checksum and not checksum_ok(path, checksum):
        note(f"{path}: checksum differs from {checksum}; fetching it again")
        return False
    return True


def archive_members(archive):
    """Yields (file name, readable file) for each file in de-en.tgz, or in de-en.tgz inside 2016-01.tgz."""
    try:
        with tarfile.open(archive) as tar:
            inner = next((m for m in tar if m.isfile() and m.name.endswith(IWSLT_PAIR)), None)
            if inner:
                with tarfile.open(fileobj=tar.extractfile(inner)) as pair:
                    yield from ((os.path.basename(m.name), pair.extractfile(m)) for m in pair if m.isfile())
            else:
                yield from ((os.path.basename(m.name), tar.extractfile(m)) for m in tar if m.isfile())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{archive} is not a readable IWSLT archive ({e}); download it again") from None


def directory_members(directory):
    """Yields (file name, readable file) for the files of an unpacked de-en.tgz (in DIR or DIR/de-en)."""
    for folder in (directory, os.path.join(directory, "de-en")):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if os.path.isfile(os.path.join(folder, name)):
                    with open(os.path.join(folder, name), "rb") as f:
                        yield name, f


def install(members, wanted, origin, *, check_files):
    """Writes the wanted files (name -> destination) from `members`: all of them, or none.

    Each goes to <destination>.part first; only when every file is there (and,
    with check_files, matches its known checksum) are they renamed into place.
    """
    parts = {}
    os.makedirs(CORPORA, exist_ok=True)
    try:
        for name, source in members:
            if name in wanted and name not in parts:
                parts[name] = wanted[name] + ".part"
                try:
                    with open(parts[name], "wb") as f:
                        shutil.copyfileobj(source, f)
                except (OSError, EOFError, zlib.error, tarfile.TarError) as e:  # broken archive, full disk
                    raise UserError(f"cannot unpack {name} from {origin} into {parts[name]} ({e}); check "
                                    f"the free space in {CORPORA}/ or download the archive again") from None
                checksum = IWSLT_CHECKSUMS.get(name)
                if check_files and checksum and not checksum_ok(parts[name], checksum):
                    raise UserError(f"{origin}: {name} is not the released file (checksum differs from "
                                    f"{checksum}); download the archive again")
        missing = sorted(set(wanted) - set(parts))
        if missing:
            raise UserError(f"{origin} lacks {len(missing)} of the {len(wanted)} IWSLT 2016 de-en files "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        for name, part in parts.items():
            os.replace(part, wanted[name])
        print(f"{CORPORA}/: {len(parts)} files unpacked from {origin}")
    finally:
        for part in parts.values():
            discard(part)
