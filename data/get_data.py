"""Downloads (and preprocesses) the few-shot datasets into <data_root>/<dataset>/.

    python data/get_data.py --dataset omniglot                     # official zips + cache
    python data/get_data.py --dataset omniglot --source metadrop   # metadrop's train/test.npy
    python -m data.get_data --dataset omniglot --small
    python data/get_data.py --dataset mimgnet                      # metadrop's train/test.npy
    python data/get_data.py --dataset mimgnet --source csv [--images_dir DIR]  # Ravi csvs + cache
    python data/get_data.py --dataset tiered                       # MetaOptNet's npz tar + cache
    python data/get_data.py --dataset tiered --source ren          # Ren et al.'s PNG pickles
    python data/get_data.py --dataset cifar [--jpeg_roundtrip]     # CIFAR-FS from CIFAR-100
    python data/get_data.py --dataset fc100                        # FC100 (MTL): 84x84 JPEG folders + cache
    python data/get_data.py --dataset svhn [--svhn_val fixed|random]  # SVHN (OOD): valid + test
    python data/get_data.py --dataset cub [--source caltech]       # CUB (OOD): l2b's files, or built
    python data/get_data.py --dataset mimgnet --source l2b         # l2b's train/valid/test.npy
    python data/get_data.py --dataset leo                          # LEO's embeddings.zip -> npz
    python data/get_data.py --dataset omniglot_runs                # Lake's 20 one-shot runs

Each dataset's files, checks and preprocessing are declared by its reader module (its
DOWNLOAD, data/base.py's Download); this module is only the command line over them.

Like metadrop's get_data.py the files land in ./data/<dataset>/ by default and transfers
show a tqdm bar; unlike it, transfers resume after an interruption, are retried, and are
checked (md5 where known) before they get their final name. Run with --help for every flag.
"""
import argparse
import logging
import os
import sys

if __package__ in (None, ''):
    # Run as `python data/get_data.py`: Python put data/ itself first on sys.path, where our
    # modules (datasets.py, ...) would shadow installed packages of the same name. Put the
    # repository root there instead, so `data.*` imports as a package.
    _here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]
    sys.path.insert(0, os.path.dirname(_here))

from data.datasets import DATASETS as SPECS  # noqa: E402
from data.download import DownloadError, download  # noqa: E402

log = logging.getLogger(__name__)


def _downloads(specs):
    """{--dataset name: Download} of the declared datasets, in registry order (the leo_*
    datasets share one download, 'leo')."""
    found = {}
    for spec in specs:
        if spec.download is not None:
            found.setdefault(spec.download.name, spec.download)
    return found


# What each dataset module declares for this command (data/base.py's Download: its sources,
# their files, checks and preprocessing).
DATASETS = _downloads(SPECS.values())

EXTRAS = {'small': 'also fetch images_background_small1/2.zip (the "minimal" Omniglot subsets)'}


def _parser():
    sources = sorted({name for d in DATASETS.values() for name in d.sources})
    source_help = '; '.join(
        f'{ds}: ' + '; '.join(f'{name}{" (default)" if name == d.default_source else ""} = '
                              f'{src.description}' for name, src in d.sources.items())
        for ds, d in DATASETS.items())
    addresses = '\n'.join(
        f'  {ds} {name}: ' + ('\n' + ' ' * (len(ds) + len(name) + 5)).join(
            f'{f.name}: {f.url}' for f in src.files)
        for ds, d in DATASETS.items() for name, src in d.sources.items())
    p = argparse.ArgumentParser(
        prog='get_data.py',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Download a few-shot dataset into <data_root>/<dataset>/ and preprocess\n'
                    'it. Finished files are verified and never fetched twice; an interrupted\n'
                    'download resumes when the same command is rerun.',
        epilog='mirrors and tests:\n'
               '  --base_url B fetches every file of the chosen source from B/<filename>.\n'
               '  --url_override NAME=URL fetches one file from URL (NAME is the file name\n'
               '  with or without extension, e.g. images_background or train.npy).\n'
               '  The known md5 checksums still apply to files fetched from a mirror; pass\n'
               '  --no_verify to skip them when you deliberately serve different files\n'
               '  (e.g. a small test fixture).\n\n'
               f'default addresses (NAME: URL):\n{addresses}')
    p.add_argument('--dataset', required=True, choices=sorted(DATASETS),
                   help='dataset to fetch')
    p.add_argument('--source', default=None, choices=sources,
                   help=f'where the data comes from. {source_help}')
    p.add_argument('--data_root', default='./data',
                   help='files go to <data_root>/<dataset>/ (default: ./data, as in the '
                        'originals)')
    for extra, text in EXTRAS.items():
        p.add_argument('--' + extra, action='store_true', help=text)
    p.add_argument('--base_url', default=None,
                   help='fetch every file of the source from <base_url>/<filename> '
                        '(a mirror; see below)')
    p.add_argument('--url_override', action='append', default=[], metavar='NAME=URL',
                   help='fetch the file NAME from URL (repeatable); wins over --base_url')
    p.add_argument('--no_verify', action='store_true',
                   help='skip the known md5 checksums (the length announced by the server '
                        'and, for metadrop, the array shape are still checked)')
    p.add_argument('--no_preprocess', action='store_true',
                   help='only download; do not build the preprocessed cache')
    p.add_argument('--force', action='store_true',
                   help='rebuild the preprocessed cache even if it is up to date')
    p.add_argument('--retries', type=int, default=5,
                   help='retries per file after network errors, HTTP 5xx or 429 (default 5)')
    p.add_argument('--no_progress', action='store_true', help='hide the progress bars')
    p.add_argument('--images_dir', default=None,
                   help='mimgnet --source csv: the folder holding the miniImageNet images named '
                        'in the csvs (default <data_root>/mimgnet/images); the cache is built '
                        'from there')
    p.add_argument('--jpeg_roundtrip', action='store_true',
                   help='cifar: save each image as JPEG (PIL default quality) and decode it again, '
                        "reproducing l2b's lossy preprocessing (default: exact pixels)")
    p.add_argument('--svhn_val', default=None, choices=('fixed', 'random'),
                   help="svhn: the validation images. fixed (default): l2b's val_idx.npy (its --ver 1, "
                        'the set its models used); random: 600 per class drawn as l2b\'s --ver 2 '
                        '(np.random.seed(222), per-class shuffles)')
    return p


def _find(files, key):
    for f in files:
        if key in (f.name, f.filename):
            return f
    return None


def main(argv=None):
    """Runs the CLI; returns the process exit code (0 on success)."""
    parser = _parser()
    args = parser.parse_args(argv)
    dataset = DATASETS[args.dataset]
    source_name = args.source or dataset.default_source
    if source_name not in dataset.sources:
        parser.error(f'--source for {args.dataset} must be one of: '
                     + ', '.join(dataset.sources))
    source = dataset.sources[source_name]

    overrides = {}
    for item in args.url_override:
        key, sep, url = item.partition('=')
        f = _find(source.files, key.strip())
        if not sep or not url:
            parser.error(f'--url_override expects NAME=URL, got {item!r}')
        if f is None:
            parser.error(f'--url_override: {args.dataset}/{source_name} has no file {key!r}; '
                         'known: ' + ', '.join(x.name for x in source.files))
        overrides[f.name] = url

    wanted = [f for f in source.files if f.extra is None or getattr(args, f.extra)]
    for extra in EXTRAS:
        if getattr(args, extra) and not any(f.extra == extra for f in source.files):
            log.warning('--%s has no effect for %s/%s.', extra, args.dataset, source_name)
    for option, where in (('images_dir', '--dataset mimgnet --source csv'),
                          ('jpeg_roundtrip', '--dataset cifar'), ('svhn_val', '--dataset svhn')):
        if getattr(args, option) not in (None, False) and option not in source.options:
            parser.error(f'--{option} only applies to {where}')
    for f in source.files:
        if f not in wanted and f.name in overrides:
            log.warning('--url_override for %s is ignored: pass --%s to fetch that file.',
                        f.name, f.extra)

    dataset_dir = os.path.join(args.data_root, args.dataset)
    if args.no_verify:
        log.warning('--no_verify: the known checksums are not checked.')
    try:
        if source.prepare is not None:
            source.prepare(dataset_dir)
        paths = []
        for f in wanted:
            if f.name in overrides:
                url = overrides[f.name]
            elif args.base_url:
                url = args.base_url.rstrip('/') + '/' + f.filename
            else:
                url = f.url
            try:
                path = download(url, os.path.join(dataset_dir, f.filename),
                                md5=None if args.no_verify else f.md5,
                                sha256=None if args.no_verify else f.sha256,
                                size=None if args.no_verify else f.size,
                                retries=args.retries, progress=not args.no_progress)
            except DownloadError as exc:
                if exc.kind == 'verify' and url != f.url:
                    raise DownloadError(f'{exc} It came from {url} instead of the original '
                                        f'{f.url}; if that is deliberately a different file, '
                                        'rerun with --no_verify.', kind=exc.kind) from None
                raise
            if f.check is not None:
                f.check(path)
            paths.append(path)
        result = None
        if source.preprocess is not None and not args.no_preprocess:
            extra = {}
            for option in source.options:
                extra[option] = not args.no_progress if option == 'progress' else getattr(args, option)
            result = source.preprocess(dataset_dir, paths, args.force, **extra)
    except DownloadError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('\ninterrupted: partial downloads are kept as *.part files; rerun the same '
              'command to resume.', file=sys.stderr)
        return 130
    print(f'{args.dataset} ({source_name}) is ready in {dataset_dir}'
          + (f'; preprocessed: {result}' if result else ''))
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    sys.exit(main())
