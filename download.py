"""Fetches OpenAI's pretrained GPT-1: the model/ folder of
https://github.com/openai/finetune-transformer-lm (about 466 MB).

    python download.py [--model_dir model/] [--base_url URL] [--timeout SECONDS]
    python download.py --from hub [--model_dir model/]

Each file is downloaded to <name>.part beside its final name and renamed only once it is
complete and verified, so an interrupted run never leaves a truncated file under a final
name; the next run resumes the .part with an HTTP Range request. Files already present and
valid are not downloaded again. A connection that brings nothing for --timeout seconds
(10) counts as broken and is tried again, RETRIES (3) times, each try named on stderr: a
stalled server fails within 40 seconds, with a message naming the URL.

Every file is checked for its form (JSON, BPE merges, .npy shards whose sizes add up to
params_shapes.json). From OpenAI's repository each is also checked against OpenAI's git
hash as it arrives; from another --base_url, the last line says whether their hashes are
OpenAI's all the same, naming the files that differ.

--from hub fetches transformers' copy of the same model from the Hugging Face Hub
(openai-community/openai-gpt: config.json, model.safetensors, vocab.json, merges.txt),
which load_openai_pretrained_model and generate.py read as well; it needs the
huggingface_hub package, which does its own resuming and checking.
"""
import argparse
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

from model_pytorch import (HF_CONFIG, HF_WEIGHTS, SHARD_NAMES, check_params_shapes,
                           check_shard_total, shard_length, weights_layout)
from text_utils import HUB_VOCAB, OPENAI_VOCAB, check_bpe, check_encoder
from utils import Parser, commit_file, real

DEFAULT_URL = 'https://raw.githubusercontent.com/openai/finetune-transformer-lm/master/model/'
REPO_URL = 'https://github.com/openai/finetune-transformer-lm'
FILES = list(OPENAI_VOCAB) + ['params_shapes.json'] + SHARD_NAMES
HUB_REPO = 'openai-community/openai-gpt'
HUB_FILES = [HF_CONFIG, HF_WEIGHTS[0], *HUB_VOCAB]
# Git blob SHA-1s of the files in OpenAI's repository (what `git ls-tree` shows), so the
# published files can be checked without shipping a separate checksum list.
GIT_BLOB_SHA1 = {
    'encoder_bpe_40000.json': '9dc3f0af5a80956e57dc8d9401e16dfadcade7c2',
    'vocab_40000.bpe': '0023a687b3d4d0b795a5e97cc914bdabb5a253df',
    'params_shapes.json': '29fac299ae848d7e447be84a33345edcf1b5353c',
    'params_0.npy': '84d83ac1f1cc878f56f33b167482c184491875d2',
    'params_1.npy': '0f19f4d4cda3d8f908e3faffd2cb2a8b9a4039da',
    'params_2.npy': '25bc19c72fdff69505a828ec6d73b32063532148',
    'params_3.npy': '5b2e6958d42a930966c9d602a012eb846ca67c83',
    'params_4.npy': '87ad158987e307e6aa64952610f466d750b73bc7',
    'params_5.npy': '74f3853316bba327229605dbedfe921996f11448',
    'params_6.npy': '5ef44e40bc076d0c9686d1273d54cbc16c3f0980',
    'params_7.npy': 'd8d5c8d3bee9b20a677605ac1fe6c7af4df57c94',
    'params_8.npy': 'f980f4b393716f396ae5ae6401708dcf4f270dc9',
    'params_9.npy': 'd389eb2074dd74754444b8062aba78b49f6a9053',
}
CHUNK = 1 << 20
# Seconds to connect, and seconds without a byte before a connection counts as broken:
# long enough for a slow link (a byte a second keeps it going), short enough that
# RETRIES + 1 tries of a stalled server end within a minute.
TIMEOUT = 10
RETRIES = 3
# Failures that a new request can get past, resuming where the last one stopped.
TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, ssl.SSLError,
             http.client.HTTPException, urllib.error.URLError)


class DownloadError(RuntimeError):
    """A file could not be fetched; the message names its URL and what to do."""


class _Interrupted(ConnectionError):
    """The server closed the connection before sending the whole file."""


def missing_files(model_dir='model/'):
    """The files of OpenAI's model/ folder that model_dir lacks, in download order."""
    return [name for name in FILES if not os.path.isfile(os.path.join(model_dir, name))]


def git_blob_sha1(path):
    """The SHA-1 git gives the file's content (sha1 of b'blob <size>\\0' + content)."""
    sha = hashlib.sha1(b'blob %d\0' % os.path.getsize(path))
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            sha.update(chunk)
    return sha.hexdigest()


def check_file(path, name, check_hashes=False):
    """Raises ValueError naming path if it is not a valid copy of OpenAI's file `name`;
    returns the number of values for a shard, else None."""
    if check_hashes:
        digest = git_blob_sha1(path)
        if digest != GIT_BLOB_SHA1[name]:
            raise ValueError(f"{path} differs from OpenAI's {name}: git blob SHA-1 {digest}, "
                             f'expected {GIT_BLOB_SHA1[name]}')
    if name in SHARD_NAMES:
        return shard_length(path)
    {'params_shapes.json': check_params_shapes, 'encoder_bpe_40000.json': check_encoder,
     'vocab_40000.bpe': check_bpe}[name](path)
    return None


def _check_total(model_dir, lengths):
    with open(os.path.join(model_dir, 'params_shapes.json'), encoding='utf-8') as f:
        check_shard_total(model_dir, json.load(f), lengths)


def verify_model_dir(model_dir='model/', check_hashes=False):
    """Checks that model_dir holds all of OpenAI's files, each well formed (and, with
    check_hashes, identical to OpenAI's), and that the shards fit params_shapes.json.
    Raises FileNotFoundError listing missing files, ValueError naming a bad one."""
    missing = missing_files(model_dir)
    if missing:
        raise FileNotFoundError(f'{model_dir} lacks {", ".join(missing)}; run '
                                f'`python download.py --model_dir {model_dir}`')
    lengths = {name: check_file(os.path.join(model_dir, name), name, check_hashes)
               for name in FILES}
    _check_total(model_dir, {name: lengths[name] for name in SHARD_NAMES})


def _content_range(value):
    """(first byte, total size or None) of a Content-Range header, or None."""
    match = re.fullmatch(r'bytes (\d+)-\d+/(\d+|\*)', (value or '').strip())
    if not match:
        return None
    return int(match.group(1)), None if match.group(2) == '*' else int(match.group(2))


def _size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def _open(url, start, timeout):
    headers = {'User-Agent': 'finetune-transformer-lm-pytorch/download.py'}
    if start:
        headers['Range'] = f'bytes={start}-'
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                  timeout=timeout)


def _http_error(url, name, err):
    if err.code == 404:
        hint = ('check --base_url: it must be the folder that holds the files, ending '
                f"in /; or copy the model/ folder of {REPO_URL} by hand")
    else:
        hint = 'the server may be busy or rate-limiting: run again later to resume'
    return DownloadError(f'{url} answered HTTP {err.code} {err.reason} while fetching {name}; '
                         f'{hint}')


def _after_416(err, part):
    """Range Not Satisfiable: the .part already holds the whole file if the server's
    size equals it. Returns True then; otherwise drops the .part to start over."""
    size = re.fullmatch(r'bytes \*/(\d+)', (err.headers.get('Content-Range') or '').strip())
    if size and int(size.group(1)) == _size(part):
        return True
    os.remove(part)
    return False


def _transfer(url, part, name, verbose, timeout):
    """One request that continues `part` from where it ends. Returns True once the part
    holds the whole file, False when the part was dropped to start over; raises a
    TRANSIENT error when the connection breaks or stalls for timeout seconds."""
    start = _size(part)
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as err:
        err.close()  # it holds the connection; its headers stay readable
        if err.code == 416 and start:
            return _after_416(err, part)
        raise _http_error(url, name, err) from None
    with resp:
        if resp.status == 206:
            got = _content_range(resp.headers.get('Content-Range'))
            if got is None or got[0] != start:
                if not start:
                    raise DownloadError(f'{url} answered a request for the whole file with '
                                        'part of it; try another --base_url')
                # Not the range asked for: drop the .part and start the file over.
                os.remove(part)
                return False
            total = got[1]
        else:
            # 200: the whole file, whether or not a range was asked for.
            start = 0
            length = resp.headers.get('Content-Length')
            total = int(length) if length and length.isdigit() else None
        _copy(resp, part, start, total, name, verbose)
    if total is not None and _size(part) != total:
        raise _Interrupted(f'the connection closed after {_size(part)} of {total} bytes')
    return True


def _copy(resp, part, start, total, name, verbose):
    with open(part, 'ab' if start else 'wb') as f, tqdm(
            total=total, initial=start, desc=name, unit='B', unit_scale=True,
            unit_divisor=1024, disable=not verbose) as bar:
        for chunk in iter(lambda: resp.read(CHUNK), b''):
            f.write(chunk)
            bar.update(len(chunk))
        f.flush()
        os.fsync(f.fileno())


def _reason(err, timeout):
    # urllib wraps a connect timeout in URLError; a stalled read raises it bare
    if isinstance(getattr(err, 'reason', err), TimeoutError):
        return f'no answer for {timeout:g} s'
    return str(err)


def _fetch(url, part, name, retries, verbose, timeout):
    """Downloads url into part, resuming after broken connections up to `retries` times.
    The loop ends: a start-over (False) needs a non-empty .part and leaves none, so
    between two of them lies a failure."""
    failures = 0
    while failures <= retries:
        try:
            if _transfer(url, part, name, verbose, timeout):
                return
        except TRANSIENT as err:
            last = _reason(err, timeout)
            failures += 1
            if verbose and failures <= retries:
                print(f'{url}: {last}; trying again ({failures} of {retries})', file=sys.stderr)
    raise DownloadError(f'could not download {url} ({last}); {part} keeps the {_size(part)} '
                        'bytes received: run `python download.py` again to resume (check the '
                        'network connection, or set HTTPS_PROXY if a proxy is needed)')


def _download_file(base_url, model_dir, name, check_hashes, retries, verbose, timeout):
    """Fetches one file to its final name through a verified .part; returns what
    check_file returns."""
    url, path = base_url + name, os.path.join(model_dir, name)
    part = path + '.part'
    _fetch(url, part, name, retries, verbose, timeout)
    try:
        result = check_file(part, name, check_hashes)
    except ValueError as err:
        os.remove(part)
        raise ValueError(f'downloaded {url} but it is not valid, so it was deleted: {err}. '
                         'Run again to download it afresh; if that fails too, the source is '
                         f"not OpenAI's model/ folder ({REPO_URL})") from None
    commit_file(part, path)  # _copy flushed it to disk
    return result


def _present(path, name, check_hashes, verbose):
    """check_file's result for a file already in place, or False if it must be fetched."""
    if not os.path.isfile(path):
        return False
    try:
        return check_file(path, name, check_hashes)
    except ValueError as err:
        if verbose:
            print(f'{err}; downloading it again')
        return False


def folder_url(url):
    """url ending in '/', so that a file's name can be appended."""
    return url if url.endswith('/') else url + '/'


def source_url(text):
    """An argparse type: an http(s) or file URL."""
    parts = urllib.parse.urlsplit(text)
    where = parts.path if parts.scheme == 'file' else parts.netloc  # file:///folder/
    if parts.scheme not in ('http', 'https', 'file') or not where:
        raise argparse.ArgumentTypeError(f'expected an http://, https:// or file:// URL of '
                                         f'the folder that holds the files, got {text!r}')
    return text


def download_openai_model(model_dir='model/', base_url=DEFAULT_URL, verbose=True,
                          retries=RETRIES, timeout=TIMEOUT):
    """Fetches OpenAI's model/ folder into model_dir, skipping files already present and
    valid, and returns the paths of the 13 files. Hashes are checked against OpenAI's
    files when base_url is the official one; any other source gets the structural checks
    only (what test servers and mirrors of a different build can offer). A connection
    that brings nothing for timeout seconds is broken; each file gets retries more tries."""
    base_url = folder_url(base_url)
    check_hashes = base_url == DEFAULT_URL
    os.makedirs(model_dir, exist_ok=True)
    lengths = {}
    for name in FILES:
        path = os.path.join(model_dir, name)
        result = _present(path, name, check_hashes, verbose)
        if result is False:
            result = _download_file(base_url, model_dir, name, check_hashes, retries, verbose,
                                    timeout)
        elif verbose:
            print(f'{path} is already complete')
        lengths[name] = result
    _check_total(model_dir, {name: lengths[name] for name in SHARD_NAMES})
    return [os.path.join(model_dir, name) for name in FILES]


def download_from_hub(model_dir='model/', repo_id=HUB_REPO):
    """Fetches transformers' copy of GPT-1 (HUB_FILES of repo_id on the Hugging Face Hub)
    into model_dir with huggingface_hub, which resumes and checks transfers itself;
    returns their paths. Raises DownloadError when huggingface_hub is not installed, a
    file cannot be fetched, or the folder is not then a complete checkpoint."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DownloadError('--from hub needs the huggingface_hub package: `pip install '
                            "huggingface_hub`, or leave out --from hub to fetch OpenAI's "
                            'files') from None
    paths = []
    for name in HUB_FILES:
        try:
            paths.append(hf_hub_download(repo_id, name, local_dir=model_dir))
        except (OSError, ValueError) as err:  # huggingface_hub's HTTP and offline errors
            raise DownloadError(f'could not download {name} of {repo_id} from the Hugging '
                                f'Face Hub ({err}); run again to resume') from None
    layout, missing = weights_layout(model_dir)
    if layout != 'transformers' or missing:
        raise DownloadError(f'{model_dir} holds no complete checkpoint after fetching '
                            f'{repo_id} (missing: {", ".join(missing)})')
    return paths


def checked(files, base_url):
    """What was checked of OpenAI's files fetched from base_url, in words: from OpenAI's
    repository each was compared with OpenAI's git hash as it was fetched; from any other
    source only their form was, so their hashes are compared here, to say whether they
    are OpenAI's release all the same."""
    if folder_url(base_url) == DEFAULT_URL:
        return "each identical to OpenAI's (git blob SHA-1)"
    form = ('well formed (JSON, BPE merges, and .npy shards whose sizes add up to '
            'params_shapes.json)')
    differ = [os.path.basename(path) for path in files
              if git_blob_sha1(path) != GIT_BLOB_SHA1[os.path.basename(path)]]
    if not differ:
        return f"{form}, and identical to OpenAI's release (git blob SHA-1)"
    return (f"{form}, but not OpenAI's release: {len(differ)} of them differ from OpenAI's "
            f"(git blob SHA-1): {', '.join(differ)}")


def main(argv=None):
    p = Parser(prog='download.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--model_dir', default='model/', help='where to put the files')
    p.add_argument('--from', dest='source', choices=['openai', 'hub'], default='openai',
                   help="openai: OpenAI's model/ folder (default); hub: transformers' copy "
                   f'on the Hugging Face Hub, {HUB_REPO} (needs huggingface_hub)')
    p.add_argument('--base_url', type=source_url,
                   help="folder URL serving OpenAI's files (default: OpenAI's repository); "
                   "files from any other are checked for their form, then compared with "
                   "OpenAI's hashes")
    p.add_argument('--timeout', type=real(lambda v: v > 0, 'a number of seconds > 0'),
                   default=TIMEOUT,
                   help='seconds without data before a connection counts as broken')
    args = p.parse_args(argv)
    if args.source == 'hub' and args.base_url:
        p.error('--base_url is for --from openai; --from hub fetches from the Hugging Face Hub')
    base_url = args.base_url or DEFAULT_URL
    try:
        if args.source == 'hub':
            files = download_from_hub(args.model_dir)
            what = f'as huggingface_hub fetched them from {HUB_REPO}'
        else:
            files = download_openai_model(args.model_dir, base_url, timeout=args.timeout)
            what = checked(files, base_url)
    except (DownloadError, ValueError, OSError) as err:
        sys.exit(f'download.py: error: {err}')
    print(f'all {len(files)} files are in {args.model_dir}, {what}')


if __name__ == '__main__':
    main()
