"""A stand-in for the Hugging Face Hub built from local folders, for tests without network.

Uploads go through stand-ins of the upload API (``HfApi.create_repo`` / ``repo_info`` /
``create_branch`` / ``preupload_lfs_files`` / ``create_commit`` / ``upload_file`` /
``upload_folder``, and the ``HfFileSystem`` reads ``DatasetDict.push_to_hub`` makes of the
repo). Each commit becomes a snapshot folder in the Hugging Face *cache layout*::

    <root>/<type>s--<owner>--<name>/snapshots/<40-hex sha>/<files>
    <root>/<type>s--<owner>--<name>/refs/<branch>          (holds the sha)

which is exactly where ``hf_hub_download`` / ``snapshot_download`` /
``from_pretrained`` / ``ModelCard.load`` read under ``HF_HUB_OFFLINE=1`` with
``HF_HUB_CACHE=<root>``. Downloads therefore run the libraries' own code, untouched:
what a test reads back is what the real download path would return from these files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shutil
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Dict, Iterable, List, Optional

from fsspec import AbstractFileSystem


def _repo_type(repo_type: Optional[str]) -> str:
    return repo_type or "model"


class StandInHub:
    def __init__(self, root: str):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.log: List[Dict] = []   # one entry per API call: name and main arguments
        self.private: Dict[str, bool] = {}

    # ---- storage ------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str, repo_type: Optional[str] = None) -> str:
        return os.path.join(self.root, f"{_repo_type(repo_type)}s--{repo_id.replace('/', '--')}")

    def exists(self, repo_id: str, repo_type: Optional[str] = None) -> bool:
        return os.path.isdir(self.repo_dir(repo_id, repo_type))

    def head(self, repo_id: str, repo_type: Optional[str] = None, revision: Optional[str] = None) -> Optional[str]:
        revision = revision or "main"
        d = self.repo_dir(repo_id, repo_type)
        if os.path.isdir(os.path.join(d, "snapshots", revision)):
            return revision
        ref = os.path.join(d, "refs", revision)
        if not os.path.isfile(ref):
            return None
        with open(ref) as f:
            return f.read().strip()

    def snapshot(self, repo_id: str, repo_type: Optional[str] = None, revision: Optional[str] = None) -> str:
        sha = self.head(repo_id, repo_type, revision)
        if sha is None:
            raise FileNotFoundError(f"stand-in Hub: no revision {revision or 'main'!r} of {repo_id!r}")
        return os.path.join(self.repo_dir(repo_id, repo_type), "snapshots", sha)

    def files(self, repo_id: str, repo_type: Optional[str] = None, revision: Optional[str] = None) -> List[str]:
        top = self.snapshot(repo_id, repo_type, revision)
        out = []
        for d, _, names in os.walk(top):
            out += [os.path.relpath(os.path.join(d, n), top).replace(os.sep, "/") for n in names]
        return sorted(out)

    def read(self, repo_id: str, path: str, repo_type: Optional[str] = None, revision: Optional[str] = None) -> str:
        with open(os.path.join(self.snapshot(repo_id, repo_type, revision), path), encoding="utf-8") as f:
            return f.read()

    def commit(self, repo_id: str, repo_type: Optional[str], additions: Dict[str, bytes],
               deletions: Iterable[str] = (), revision: Optional[str] = None, message: str = "") -> str:
        revision = revision or "main"
        d = self.repo_dir(repo_id, repo_type)
        parent = self.head(repo_id, repo_type, revision)
        digest = hashlib.sha1(f"{repo_id}|{parent}|{message}|{len(self.log)}|{sorted(additions)}".encode())
        sha = digest.hexdigest()
        new = os.path.join(d, "snapshots", sha)
        if parent is not None:
            shutil.copytree(os.path.join(d, "snapshots", parent), new)
        else:
            os.makedirs(new)
        for path in deletions:
            target = os.path.join(new, path)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
        for path, data in additions.items():
            target = os.path.join(new, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        os.makedirs(os.path.join(d, "refs"), exist_ok=True)
        with open(os.path.join(d, "refs", revision), "w") as f:
            f.write(sha)
        return sha

    # ---- the stand-ins --------------------------------------------------------------------------
    def api(self, **_kwargs) -> "StandInApi":
        return StandInApi(self)

    def install(self, monkeypatch) -> "StandInHub":
        """Route uploads to this stand-in and downloads to its cache (``HF_HUB_CACHE``)."""
        import datasets.arrow_dataset
        import datasets.dataset_dict
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.repocard
        import transformers.trainer

        hub = self

        class Api(StandInApi):
            def __init__(self, *args, **kwargs):
                super().__init__(hub)

        class FileSystem(StandInFileSystem):
            def __init__(self, *args, **kwargs):
                super().__init__(hub)

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", self.root)
        monkeypatch.setenv("HF_HUB_CACHE", self.root)
        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(datasets.dataset_dict, "HfApi", Api)
        monkeypatch.setattr(datasets.arrow_dataset, "HfApi", Api)
        monkeypatch.setattr(datasets.dataset_dict, "HfFileSystem", FileSystem)
        monkeypatch.setattr(huggingface_hub.repocard, "upload_file", Api().upload_file)
        monkeypatch.setattr(transformers.trainer, "hf_api", lambda: Api())
        # the Hub validates a card's YAML server-side before a push; here: it must parse back
        monkeypatch.setattr(huggingface_hub.repocard.RepoCard, "validate", _validate_locally)
        return self


def _validate_locally(card, repo_type=None) -> None:
    import yaml

    type(card)(str(card))  # the metadata parses into the card data class
    yaml.safe_load(card.data.to_yaml())


def _content(op) -> bytes:
    data = getattr(op, "_standin_bytes", None)
    if data is not None:
        return data
    src = op.path_or_fileobj
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            return f.read()
    if isinstance(src, io.IOBase) or hasattr(src, "read"):
        src.seek(0)
        return src.read()
    raise TypeError(f"stand-in Hub: cannot read {type(src).__name__}")


class StandInApi:
    """The subset of ``huggingface_hub.HfApi`` that uploads use, writing into a :class:`StandInHub`."""

    def __init__(self, hub: StandInHub):
        self.hub = hub

    def _log(self, name, **kw):
        self.hub.log.append({"call": name, **kw})

    def whoami(self, *args, **kwargs):
        return {"name": "stand-in", "type": "user"}

    def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
        self._log("create_repo", repo_id=repo_id, repo_type=_repo_type(repo_type), private=private, token=token)
        if not self.hub.exists(repo_id, repo_type):
            self.hub.commit(repo_id, repo_type, {".gitattributes": b"*.safetensors filter=lfs\n"},
                            message="initial commit")
            self.hub.private[repo_id] = bool(private)
        elif not exist_ok:
            raise ValueError(f"stand-in Hub: {repo_id} exists")
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def repo_info(self, repo_id, *, repo_type=None, revision=None, **kwargs):
        from huggingface_hub.errors import RepositoryNotFoundError

        sha = self.hub.head(repo_id, repo_type, revision) if self.hub.exists(repo_id, repo_type) else None
        if sha is None:
            import httpx2

            response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/api/{repo_id}"))
            raise RepositoryNotFoundError(f"stand-in Hub: {repo_id} not found", response=response)
        return SimpleNamespace(id=repo_id, sha=sha, private=self.hub.private.get(repo_id, False))

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False, **kwargs):
        sha = self.hub.head(repo_id, repo_type, "main")
        ref = os.path.join(self.hub.repo_dir(repo_id, repo_type), "refs", branch)
        if not os.path.exists(ref):
            with open(ref, "w") as f:
                f.write(sha)

    def preupload_lfs_files(self, repo_id, additions, **kwargs):
        for op in additions:  # the caller deletes its temporary file once this returns
            op._standin_bytes = _content(op)

    def create_commit(self, repo_id, operations, *, commit_message=None, repo_type=None, revision=None,
                      parent_commit=None, **kwargs):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        adds = {op.path_in_repo: _content(op) for op in operations if isinstance(op, CommitOperationAdd)}
        dels = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
        self._log("create_commit", repo_id=repo_id, repo_type=_repo_type(repo_type), files=sorted(adds),
                  deleted=sorted(dels), message=commit_message)
        sha = self.hub.commit(repo_id, repo_type, adds, dels, revision, commit_message or "")
        return SimpleNamespace(oid=sha, commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}", pr_url=None,
                               repo_url=SimpleNamespace(repo_id=repo_id))

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, repo_type=None, revision=None,
                    commit_message=None, token=None, **kwargs):
        from huggingface_hub import CommitOperationAdd

        info = self.create_commit(repo_id, [CommitOperationAdd(path_in_repo=path_in_repo,
                                                               path_or_fileobj=path_or_fileobj)],
                                  commit_message=commit_message or f"Upload {path_in_repo}", repo_type=repo_type,
                                  revision=revision)
        return f"https://huggingface.co/{repo_id}/blob/{info.oid}/{path_in_repo}"

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, repo_type=None, revision=None,
                      commit_message=None, ignore_patterns=None, allow_patterns=None, run_as_future=False,
                      token=None, **kwargs):
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        allow = [allow_patterns] if isinstance(allow_patterns, str) else list(allow_patterns or [])
        adds = {}
        for d, _, names in os.walk(folder_path):
            for n in names:
                rel = os.path.relpath(os.path.join(d, n), folder_path).replace(os.sep, "/")
                # huggingface_hub's filter: a pattern ending in "/" or matching a folder prefix
                def match(p):
                    return fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.rstrip("/") + "/*")
                if allow and not any(match(p) for p in allow):
                    continue
                if any(match(p) for p in ignore):
                    continue
                with open(os.path.join(d, n), "rb") as f:
                    adds[(path_in_repo.rstrip("/") + "/" if path_in_repo else "") + rel] = f.read()
        self._log("upload_folder", repo_id=repo_id, repo_type=_repo_type(repo_type), files=sorted(adds),
                  message=commit_message)
        sha = self.hub.commit(repo_id, repo_type, adds, (), revision, commit_message or "Upload folder")
        info = SimpleNamespace(oid=sha, commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}")
        if run_as_future:
            fut = Future()
            fut.set_result(info)
            return fut
        return info


class StandInFileSystem(AbstractFileSystem):
    """``HfFileSystem`` over the stand-in: paths ``<type>s/<owner>/<name>@<sha>/<path>``."""

    protocol = "hf-standin"
    cachable = False

    def __init__(self, hub: StandInHub):
        super().__init__()
        self.hub = hub

    def _local(self, path: str) -> str:
        path = str(path).lstrip("/")
        kind, rest = path.split("/", 1)
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(kind, "model")
        repo, _, sub = rest.partition("@")
        sha, _, inner = sub.partition("/")
        return os.path.join(self.hub.repo_dir(repo, repo_type), "snapshots", sha, inner)

    def glob(self, path, **kwargs):
        import glob as _glob

        path = str(path).lstrip("/")
        repo_part, _, after = path.partition("@")
        sha = after.partition("/")[0]
        hub_top = f"{repo_part}@{sha}/"
        local_top = self._local(hub_top)
        return [hub_top + os.path.relpath(p, local_top).replace(os.sep, "/")
                for p in sorted(_glob.glob(self._local(path)))]

    def _open(self, path, mode="rb", **kwargs):
        local = self._local(path)
        if not os.path.isfile(local):
            raise FileNotFoundError(path)
        return open(local, mode)
