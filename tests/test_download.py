"""download.py against a loopback HTTP server serving synthetic files in OpenAI's format."""
import collections
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import download
import text_utils
from conftest import REPO, fails
from openai_shards import published_shapes, write_shards



class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.root, honouring `Range: bytes=N-` unless server.ignore_range, and
    cutting the first response for each name in server.cut halfway."""

    def do_GET(self):
        srv, (folder, _, name) = self.server, self.path.rpartition('/')
        srv.requests.append((name, self.headers.get('Range')))
        path = os.path.join(srv.root, name)
        if folder != '/model' or not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, 'rb') as f:
            data = f.read()
        start = self._start(len(data))
        if start is None:
            return
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if name in srv.cut:
            srv.cut.remove(name)
            body = body[:len(body) // 2]
        self.wfile.write(body)
        srv.served[name] += len(body)

    def _start(self, size):
        """Sends the status line and returns the first byte to send, or None after a 416."""
        match = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
        if not match or self.server.ignore_range:
            self.send_response(200)
            return 0
        start = int(match.group(1))
        if start >= size:
            self.send_response(416)
            self.send_header('Content-Range', f'bytes */{size}')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header('Content-Range', f'bytes {start}-{size - 1}/{size}')
        return start

    def log_message(self, *args):
        pass


def write_source(folder):
    """A tiny model/ folder in OpenAI's exact formats."""
    write_shards(folder, published_shapes(n_layer=1, n_embd=8, n_vocab=50, n_ctx=16))
    with open(os.path.join(folder, 'encoder_bpe_40000.json'), 'w') as f:
        json.dump({'t': 0, 'h': 1, 'th': 2, 'e</w>': 3, 'the</w>': 4}, f)
    with open(os.path.join(folder, 'vocab_40000.bpe'), 'w') as f:
        f.write('#version: 0.2\nt h\ne </w>\nth e</w>\n')


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib would send even loopback requests through a proxy named in the environment."""
    for var in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy',
                'ALL_PROXY'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('no_proxy', '127.0.0.1')


@pytest.fixture
def server(tmp_path):
    root = tmp_path / 'source'
    write_source(root)
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), RangeHandler)
    httpd.root, httpd.ignore_range, httpd.cut = str(root), False, set()
    httpd.requests, httpd.served = [], collections.Counter()
    httpd.url = f'http://127.0.0.1:{httpd.server_address[1]}/model/'
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / 'model')


def source_bytes(server, name):
    with open(os.path.join(server.root, name), 'rb') as f:
        return f.read()


def assert_identical(server, dest):
    for name in download.FILES:
        with open(os.path.join(dest, name), 'rb') as f:
            assert f.read() == source_bytes(server, name), name
    assert not [n for n in os.listdir(dest) if n.endswith('.part')]


def fetch(server, dest, **kw):
    return download.download_openai_model(dest, server.url, verbose=False, timeout=5, **kw)


def write_part(dest, name, data):
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, name + '.part'), 'wb') as f:
        f.write(data)


def test_full_download_lands_identical_bytes(server, dest):
    paths = fetch(server, dest)
    assert paths == [os.path.join(dest, name) for name in download.FILES]
    assert_identical(server, dest)
    assert server.requests == [(name, None) for name in download.FILES]
    download.verify_model_dir(dest)


def test_resume_asks_for_the_rest_only(server, dest):
    data = source_bytes(server, 'params_3.npy')
    half = len(data) // 2
    write_part(dest, 'params_3.npy', data[:half])
    fetch(server, dest)
    assert ('params_3.npy', f'bytes={half}-') in server.requests
    assert server.served['params_3.npy'] == len(data) - half
    assert_identical(server, dest)


def test_server_ignoring_range_restarts_the_file(server, dest):
    server.ignore_range = True
    data = source_bytes(server, 'params_3.npy')
    write_part(dest, 'params_3.npy', data[:len(data) // 2])
    fetch(server, dest)
    assert server.served['params_3.npy'] == len(data)
    assert_identical(server, dest)


@pytest.mark.parametrize('extra, served', [(b'', 0), (b'stale', None)])
def test_range_not_satisfiable(server, dest, extra, served):
    """A .part that already holds the whole file is kept (416, nothing sent); one longer
    than the file is dropped and the file fetched again."""
    data = source_bytes(server, 'params_3.npy')
    write_part(dest, 'params_3.npy', data + extra)
    fetch(server, dest)
    assert server.served['params_3.npy'] == (len(data) if served is None else served)
    assert_identical(server, dest)


def test_interrupted_transfer_resumes_on_the_next_call(server, dest):
    server.cut.add('params_5.npy')
    with pytest.raises(download.DownloadError, match=re.escape(server.url + 'params_5.npy')):
        fetch(server, dest, retries=0)
    part = os.path.join(dest, 'params_5.npy.part')
    received = os.path.getsize(part)
    assert 0 < received < len(source_bytes(server, 'params_5.npy'))
    assert not os.path.exists(os.path.join(dest, 'params_5.npy'))
    server.requests.clear()
    fetch(server, dest, retries=0)
    assert server.requests == [('params_5.npy', f'bytes={received}-')] + [
        (name, None) for name in download.FILES[download.FILES.index('params_6.npy'):]]
    assert_identical(server, dest)


def test_interrupted_transfer_is_retried_within_a_call(server, dest):
    server.cut.add('params_5.npy')
    fetch(server, dest)
    ranges = [r for name, r in server.requests if name == 'params_5.npy']
    assert ranges[0] is None and ranges[1].startswith('bytes=') and len(ranges) == 2
    assert_identical(server, dest)


def test_truncated_shard_is_deleted_and_named(server, dest):
    path = os.path.join(server.root, 'params_4.npy')
    data = source_bytes(server, 'params_4.npy')
    with open(path, 'wb') as f:
        f.write(data[:-8])
    with pytest.raises(ValueError, match='params_4.npy'):
        fetch(server, dest)
    assert not os.path.exists(os.path.join(dest, 'params_4.npy'))
    assert not os.path.exists(os.path.join(dest, 'params_4.npy.part'))


def test_shards_not_matching_the_shapes_are_rejected(server, dest):
    shard = np.load(os.path.join(server.root, 'params_4.npy'))
    np.save(os.path.join(server.root, 'params_4.npy'), shard[:-3])
    with pytest.raises(ValueError, match=r'params_4\.npy: \d+.*params_shapes\.json'):
        fetch(server, dest)
    with pytest.raises(ValueError, match='params_shapes.json'):
        download.verify_model_dir(dest)


def test_shard_of_wrong_dtype_is_rejected(server, dest):
    np.save(os.path.join(server.root, 'params_2.npy'), np.zeros(7, dtype=np.float64))
    with pytest.raises(ValueError, match='params_2.npy.*float64'):
        fetch(server, dest)


def test_http_404_names_the_url(server, dest):
    os.remove(os.path.join(server.root, 'vocab_40000.bpe'))
    with pytest.raises(download.DownloadError) as err:
        fetch(server, dest)
    assert server.url + 'vocab_40000.bpe' in str(err.value) and '404' in str(err.value)
    assert '--base_url' in str(err.value)


def test_complete_files_are_not_fetched_again(server, dest):
    fetch(server, dest)
    server.requests.clear()
    fetch(server, dest)
    assert server.requests == []
    with open(os.path.join(dest, 'params_7.npy'), 'r+b') as f:
        f.truncate(100)
    fetch(server, dest)
    assert server.requests == [('params_7.npy', None)]
    assert_identical(server, dest)


def test_missing_files(server, dest):
    assert download.missing_files(dest) == download.FILES
    fetch(server, dest)
    assert download.missing_files(dest) == []
    os.remove(os.path.join(dest, 'params_9.npy'))
    os.remove(os.path.join(dest, 'vocab_40000.bpe'))
    assert download.missing_files(dest) == ['vocab_40000.bpe', 'params_9.npy']
    with pytest.raises(FileNotFoundError, match='vocab_40000.bpe, params_9.npy'):
        download.verify_model_dir(dest)


def test_official_source_is_checked_against_openai_hashes(server, dest, monkeypatch):
    monkeypatch.setattr(download, 'DEFAULT_URL', server.url)
    with pytest.raises(ValueError, match='encoder_bpe_40000.json.*SHA-1'):
        fetch(server, dest)
    assert os.listdir(dest) == []


def test_git_blob_sha1(tmp_path):
    path = tmp_path / 'hello'
    path.write_bytes(b'hello\n')
    # `echo hello | git hash-object --stdin`
    assert download.git_blob_sha1(path) == 'ce013625030ba8dba906f756967f9e9ca394464a'


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
    return subprocess.run([sys.executable, 'download.py', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli(server, dest):
    done = run_cli('--model_dir', dest, '--base_url', server.url)
    assert done.returncode == 0, done.stderr
    assert_identical(server, dest)
    # Another source than OpenAI's: the files' form was checked, their hashes differ.
    assert done.stdout == (
        f'all 13 files are in {dest}, well formed (JSON, BPE merges, and .npy shards whose '
        "sizes add up to params_shapes.json), but not OpenAI's release: 13 of them differ "
        f"from OpenAI's (git blob SHA-1): {', '.join(download.FILES)}\n")


def source_hashes(server):
    return {name: download.git_blob_sha1(os.path.join(server.root, name))
            for name in download.FILES}


def test_a_mirror_of_openais_files_is_said_to_be_theirs(server, dest, monkeypatch, capsys):
    """Served elsewhere, files whose hashes are OpenAI's are said to be OpenAI's; from
    OpenAI's repository, each was compared as it came."""
    monkeypatch.setattr(download, 'GIT_BLOB_SHA1', source_hashes(server))
    download.main(['--model_dir', dest, '--base_url', server.url, '--timeout', '5'])
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        ", and identical to OpenAI's release (git blob SHA-1)")
    monkeypatch.setattr(download, 'DEFAULT_URL', server.url)
    download.main(['--model_dir', dest, '--timeout', '5'])
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"all 13 files are in {dest}, each identical to OpenAI's (git blob SHA-1)")


def test_some_files_differing_are_named(server, dest, monkeypatch, capsys):
    hashes = source_hashes(server)
    monkeypatch.setattr(download, 'GIT_BLOB_SHA1', {**hashes, 'params_3.npy': '0' * 40})
    download.main(['--model_dir', dest, '--base_url', server.url, '--timeout', '5'])
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        "but not OpenAI's release: 1 of them differ from OpenAI's (git blob SHA-1): "
        'params_3.npy')


@pytest.mark.parametrize('flags, message', [
    (['--timeout', '-1'], "argument --timeout: expected a number of seconds > 0, got '-1'"),
    (['--timeout', 'nan'], "argument --timeout: expected a number of seconds > 0, got 'nan'"),
    (['--timeout', 'soon'], "argument --timeout: expected a number of seconds > 0, got 'soon'"),
    (['--base_url', 'example.com/model/'], "argument --base_url: expected an http://, "
     "https:// or file:// URL of the folder that holds the files, got 'example.com/model/'"),
    (['--base_url', 'http:///model/'], "argument --base_url: expected an http://"),
    (['--from', 'elsewhere'], "argument --from: invalid choice: 'elsewhere'"),
])
def test_bad_flags_exit_2_in_one_line(dest, capsys, flags, message):
    code, out, err = fails(['--model_dir', dest] + flags, capsys, main=download.main)
    assert code == 2 and out == '' and len(err.splitlines()) == 1
    assert err.startswith(f'download.py: error: {message}')
    assert not os.path.exists(dest)


def test_cli_reports_errors_without_traceback(server, dest):
    done = run_cli('--model_dir', dest, '--base_url', server.url + 'nowhere/')
    assert done.returncode == 1
    assert 'Traceback' not in done.stderr
    assert server.url + 'nowhere/encoder_bpe_40000.json' in done.stderr


@pytest.fixture
def stalled_url():
    """A server that accepts connections (the kernel completes them for the listening
    socket) and never answers."""
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(8)
        yield f'http://127.0.0.1:{listener.getsockname()[1]}/model/'


def test_stalled_server_fails_after_the_timeout_naming_the_url(stalled_url, dest, capsys):
    start = time.monotonic()
    with pytest.raises(download.DownloadError) as err:
        download.download_openai_model(dest, stalled_url, retries=2, timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.85 < elapsed < 5  # three tries of 0.3 s each, then the error
    url = stalled_url + 'encoder_bpe_40000.json'
    assert url in str(err.value) and 'no answer for 0.3 s' in str(err.value)
    tries = capsys.readouterr().err.splitlines()
    assert tries == [f'{url}: no answer for 0.3 s; trying again ({i} of 2)' for i in (1, 2)]


def test_default_timeouts_end_a_stall_within_a_minute():
    assert (download.RETRIES + 1) * download.TIMEOUT <= 60


def fake_hub(calls, fail=None):
    """huggingface_hub.hf_hub_download writing a stand-in of each file into local_dir."""
    def hf_hub_download(repo_id, filename, local_dir=None):
        calls.append((repo_id, filename))
        if filename == fail:
            raise OSError('offline')
        path = os.path.join(local_dir, filename)
        os.makedirs(local_dir, exist_ok=True)
        with open(path, 'w') as f:
            f.write('{}')
        return path
    return hf_hub_download


def test_from_hub_fetches_transformers_files(monkeypatch, dest, capsys):
    huggingface_hub = pytest.importorskip('huggingface_hub')
    calls = []
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', fake_hub(calls))
    download.main(['--from', 'hub', '--model_dir', dest])
    files = ['config.json', 'model.safetensors', 'vocab.json', 'merges.txt']
    assert calls == [('openai-community/openai-gpt', name) for name in files]
    assert sorted(os.listdir(dest)) == sorted(files)
    assert f'all 4 files are in {dest}' in capsys.readouterr().out
    assert text_utils.find_vocabulary(dest) == (os.path.join(dest, 'vocab.json'),
                                               os.path.join(dest, 'merges.txt'))


def test_from_hub_failure_names_the_file(monkeypatch, dest):
    huggingface_hub = pytest.importorskip('huggingface_hub')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download',
                        fake_hub([], fail='model.safetensors'))
    with pytest.raises(SystemExit, match='could not download model.safetensors of '
                                         r'openai-community/openai-gpt .*\(offline\)'):
        download.main(['--from', 'hub', '--model_dir', dest])


def test_from_hub_without_huggingface_hub(monkeypatch, dest):
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)  # import fails
    with pytest.raises(SystemExit) as err:
        download.main(['--from', 'hub', '--model_dir', dest])
    assert 'pip install huggingface_hub' in err.value.code  # a message: exit status 1
    assert not os.path.exists(dest)


def test_from_hub_takes_no_base_url(dest, capsys):
    with pytest.raises(SystemExit) as err:
        download.main(['--from', 'hub', '--base_url', 'http://example.com/', '--model_dir', dest])
    assert err.value.code == 2 and '--base_url is for --from openai' in capsys.readouterr().err
