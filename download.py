"""Fetches a preset corpus into corpora/: python download.py iwslt2016 | multi30k.

Every file is checked against a known checksum before it is used. Downloads
go to `<name>.part`, are resumed after a cut connection, and are renamed only
once they verify, so corpora/ never holds half a file, not even after a
failure or Ctrl-C. Files already present and verified are not fetched again.

    python download.py multi30k --mirror https://example.org/multi30k/   # or $CORPUS_MIRROR
    python download.py iwslt2016 --from ~/Downloads                      # files fetched by hand
"""
import os
import shutil
import urllib.parse

from cli import Parser, run
import corpora
from files import checksum_ok, discard
from messages import UserError
from corpora import CORPORA, DATASETS, corpus_paths
from fetch import obtain
from hyperparams import PRESETS, Hyperparams

MIRROR_ENV = "CORPUS_MIRROR"


def copy_verified(source, dest, checksum):
    """Copies a file the user downloaded into place, through dest.part, if its checksum matches."""
    if not checksum_ok(source, checksum):
        raise UserError(f"{source} is not the published file (its checksum differs from {checksum}); "
                        "download it again")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    try:
        shutil.copyfile(source, dest + ".part")
        os.replace(dest + ".part", dest)
    finally:
        discard(dest + ".part")
    print(f"{dest}: copied from {source}, checksum ok")


def multi30k(args):
    """Fetches (or imports with --from) each Multi30k file that is not already in place."""
    bases = [args.mirror] if args.mirror else corpora.MULTI30K_BASES
    skipped = []
    for split in ("train", *DATASETS["multi30k"]["splits"]):
        for dest in corpus_paths("multi30k", split):
            name = os.path.basename(dest)
            checksum = corpora.MULTI30K_CHECKSUMS[name]
            if corpora.present(dest, checksum):
                print(f"{dest}: already present, checksum ok")
            elif args.source_dir:
                found = [p for p in (os.path.join(args.source_dir, corpora.MULTI30K_DIR, name),
                                     os.path.join(args.source_dir, name)) if os.path.isfile(p)]
                if found:
                    copy_verified(found[0], dest, checksum)
                elif split in corpora.MULTI30K_NEEDED:
                    raise UserError(f"{name} is not in --from {args.source_dir}; put the Multi30k files "
                                    f"there (from {corpora.MULTI30K_BASES[0]}{corpora.MULTI30K_DIR})")
                else:
                    skipped.append(name)
            else:
                failures = obtain(dest, [(base + corpora.MULTI30K_DIR + name, checksum) for base in bases],
                                  retries=args.retries, wait=args.retry_wait)
                if failures:
                    raise UserError(f"could not fetch {name} ({'; '.join(failures)}); download the files "
                                    f"under {corpora.MULTI30K_DIR} of https://github.com/multi30k/dataset by hand "
                                    f"into {os.path.dirname(dest)}/, or into DIR and run "
                                    f"python download.py multi30k --from DIR")
    if skipped:
        print(f"not in {args.source_dir}, so skipped: {', '.join(skipped)} (optional test splits)")


def iwslt2016(args):
    """Fetches the IWSLT 2016 archive (or takes --from's) and unpacks the de-en files the presets use."""
    splits = ("train", *DATASETS["iwslt2016"]["splits"])
    wanted = {os.path.basename(p): p for split in splits for p in corpus_paths("iwslt2016", split)}
    if all(corpora.present(path, corpora.IWSLT_CHECKSUMS.get(name)) for name, path in wanted.items()):
        print(f"{CORPORA}/: all {len(wanted)} IWSLT 2016 files already present")
        return
    if args.source_dir:
        for name, checksum in ((corpora.IWSLT_WHOLE, corpora.IWSLT_WHOLE_MD5), (corpora.IWSLT_PAIR, None),
                               ("de-en.tgz", None)):
            archive = os.path.join(args.source_dir, name)
            if os.path.isfile(archive):
                if checksum and not checksum_ok(archive, checksum):
                    raise UserError(f"{archive} is not the published archive (its checksum differs from "
                                    f"{checksum}); download it again")
                return corpora.install(corpora.archive_members(archive), wanted, archive, check_files=not checksum)
        return corpora.install(corpora.directory_members(args.source_dir), wanted, args.source_dir, check_files=True)

    sources = corpora.IWSLT_SOURCES
    if args.mirror:
        sources = ((args.mirror + corpora.IWSLT_PAIR, None, "de-en.tgz"),
                   (args.mirror + corpora.IWSLT_WHOLE, corpora.IWSLT_WHOLE_MD5, corpora.IWSLT_WHOLE))
    failures = []
    for url, checksum, name in sources:
        archive = os.path.join(CORPORA, name)
        failed = obtain(archive, [(url, checksum)], retries=args.retries, wait=args.retry_wait)
        if failed:
            failures += failed
            continue
        try:
            return corpora.install(corpora.archive_members(archive), wanted, url, check_files=not checksum)
        except UserError as e:  # a wrong archive: the next address may serve the right one
            failures.append(str(e))
        finally:
            discard(archive)  # unpacked or unusable: either way no longer needed
    raise UserError(f"could not fetch the IWSLT 2016 archive ({'; '.join(failures)}); download "
                    f"{corpora.IWSLT_WHOLE} (or the de-en.tgz inside it, packed or unpacked) by hand into DIR "
                    f"and run python download.py iwslt2016 --from DIR")


def main(argv):
    parser = Parser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("dataset", nargs="?", choices=sorted(DATASETS),
                        help="the corpus to fetch (or give the --preset that trains on it)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="fetch the corpus this preset trains on")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--from", dest="source_dir", metavar="DIR",
                       help="import files downloaded by hand from DIR instead of fetching them")
    where.add_argument("--mirror", metavar="BASE_URL", default=os.environ.get(MIRROR_ENV),
                       help=f"try BASE_URL instead of the public addresses, with the same relative "
                            f"paths (default: ${MIRROR_ENV})")
    parser.add_argument("--retries", type=int, default=3, help="attempts per address (default: 3)")
    parser.add_argument("--retry_wait", type=float, default=2.0, metavar="SECONDS",
                        help="wait before the second attempt, doubled after each failure (default: 2)")
    args = parser.parse_args(argv)
    if args.preset:
        args.dataset = args.dataset or PRESETS[args.preset].get("dataset", Hyperparams.dataset)
    if not args.dataset:
        parser.error(f"name the corpus to fetch: {' or '.join(sorted(DATASETS))} (or --preset NAME)")
    if args.source_dir and not os.path.isdir(args.source_dir):
        raise UserError(f"--from {args.source_dir}: no such directory")
    if args.mirror:
        if urllib.parse.urlsplit(args.mirror).scheme not in ("http", "https", "ftp", "file"):
            raise UserError(f"--mirror {args.mirror} is not an address; give one like https://example.org/corpora/ "
                            f"(or file:///path/to/dir/)")
        args.mirror = args.mirror.rstrip("/") + "/"
    if args.retries < 1:
        raise UserError(f"--retries must be at least 1, got {args.retries}")
    if not args.retry_wait >= 0:  # NaN too
        raise UserError(f"--retry_wait must be 0 or more seconds, got {args.retry_wait}")
    {"multi30k": multi30k, "iwslt2016": iwslt2016}[args.dataset](args)


if __name__ == "__main__":
    run(main)
