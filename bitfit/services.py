"""The stores a run writes to: their URLs without secrets, and a quick check that each answers.

Passwords never travel in a URL that something may keep (Prefect keeps a flow run's parameters,
MLflow its params, logs their lines): ``move_secrets`` takes them out of the Optuna storage URL and
the MLflow tracking URI and puts them where the client libraries read them from the environment
(``PGPASSWORD`` for PostgreSQL, ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` for an
MLflow server). ``check_storage`` and ``check_tracking`` answer within seconds, before a study is
created, with one sentence when a store cannot be used.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bitfit.settings import MLFLOW_HTTP_DEFAULTS, STORAGE_ENV, TRACKING_ENV

CONNECT_TIMEOUT_S = 5
_SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token", "key")
class ServiceError(OSError):
    """A store (Optuna storage, MLflow tracking) that cannot be reached or used."""


def _secret_key(name: str) -> bool:
    return any(k in name.lower() for k in _SECRET_KEYS)


def mask_url(url: str) -> str:
    """The URL with every password (``user:pw@`` or ``?password=pw``) replaced by ``***``."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    secret_query = any(_secret_key(k) for k, _ in parse_qsl(parts.query))
    if parts.password is None and not secret_query:
        return url  # untouched: urlunsplit would turn sqlite:////abs into sqlite://abs
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if query:
        query = urlencode([(k, "***" if _secret_key(k) else v)
                           for k, v in parse_qsl(query, keep_blank_values=True)], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def split_password(url: str) -> tuple[str, str | None]:
    """The URL without its password, and the password (None when it has none)."""
    if "://" not in url:
        return url, None
    parts = urlsplit(url)
    password = parts.password
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if password is None and not any(k.lower() in ("password", "passwd") for k, _ in pairs):
        return url, None
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    kept = [(k, v) for k, v in pairs if k.lower() not in ("password", "passwd")]
    if len(kept) != len(pairs):
        password = next(v for k, v in pairs if k.lower() in ("password", "passwd"))
    stripped = urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept)))
    return stripped, password


def has_password(url: str | None) -> bool:
    return bool(url) and split_password(str(url))[1] is not None


def move_secrets(storage: str | None, tracking_uri: str | None) -> tuple[str | None, str | None]:
    """Take the passwords out of the two URLs and into this process's environment.

    Returns:
        The URLs without passwords, to pass to flows and to record.
    """
    if storage:
        storage, password = split_password(storage)
        if password is not None:
            if not storage.startswith("postgresql"):
                raise ServiceError(
                    f"the storage URL {mask_url(storage)} carries a password, which would be "
                    "stored with the run: give it through the database client's environment "
                    "instead and pass the URL without it")
            os.environ["PGPASSWORD"] = password
    if tracking_uri:
        tracking_uri, password = split_password(tracking_uri)
        if password is not None:
            parts = urlsplit(tracking_uri)
            if parts.username:
                os.environ["MLFLOW_TRACKING_USERNAME"] = parts.username
                tracking_uri = urlunsplit(parts._replace(netloc=parts.netloc.split("@", 1)[1]))
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return storage, tracking_uri


def secrets_from_environment() -> None:
    """A password in ``$BITFIT_OPTUNA_STORAGE`` or ``$MLFLOW_TRACKING_URI`` reaches the client
    libraries even where a flow is handed the same URL without it (a study worker)."""
    move_secrets(os.environ.get(STORAGE_ENV), os.environ.get(TRACKING_ENV))


def refuse_secrets(**urls: str | None) -> None:
    """Refuse a URL with a password where it has already become a flow parameter."""
    for name, url in urls.items():
        if has_password(url):
            env = "MLFLOW_TRACKING_PASSWORD" if "tracking" in name else "PGPASSWORD"
            raise ServiceError(
                f"{name} {mask_url(str(url))} carries a password, which Prefect keeps with the "
                f"flow run's parameters: set {env} (or ~/.pgpass) where the flow runs and pass "
                "the URL without it")


def check_storage(url: str) -> None:
    """Make sure the Optuna storage can be opened (a server answers within seconds)."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            folder = Path(path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ServiceError(f"cannot create the folder {str(folder)!r} of the storage "
                                   f"{url}: {err.strerror}; choose another --home or "
                                   "--storage") from None
        return
    if url.startswith("postgres://"):
        raise ServiceError(f"the storage {mask_url(url)} starts with postgres://, which "
                           "SQLAlchemy does not accept: write postgresql://")
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith(("postgresql",
                                                                        "mysql")) else {}
    try:
        engine = create_engine(url, connect_args=args)
    except (NoSuchModuleError, ArgumentError, ValueError) as err:
        raise ServiceError(f"the storage {mask_url(url)} is not a database URL that can be "
                           f"opened ({_first_line(err)}): use sqlite:///FILE or "
                           "postgresql://USER@HOST:PORT/DB") from None
    except ImportError as err:
        raise ServiceError(f"the storage {mask_url(url)} needs a database driver that is not "
                           f"installed ({err.name}): install it or use postgresql://") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        raise ServiceError(f"cannot reach the Optuna storage {mask_url(url)} "
                           f"({_reason(err)}): start the database or fix --storage (and "
                           "PGPASSWORD)") from None
    finally:
        engine.dispose()


def check_tracking(uri: str) -> None:
    """Make sure the MLflow tracking store can be used (a server answers within seconds)."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if uri.startswith("sqlite:"):
        check_storage(uri)
        return
    if not uri.startswith(("http://", "https://")):
        if uri.startswith(("postgresql", "mysql", "databricks")):
            return
        raise ServiceError(f"the tracking URI {mask_url(uri)} is neither sqlite:///FILE, a "
                           "database URL nor an http(s):// MLflow server: use one of those")
    request = urllib.request.Request(f"{uri.rstrip('/')}/health")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ServiceError(f"cannot reach the MLflow tracking server {mask_url(uri)} "
                           f"({reason}): start it or fix --tracking-uri / "
                           "$MLFLOW_TRACKING_URI") from None
    if status != 200:
        raise ServiceError(f"the MLflow tracking server {mask_url(uri)} answered HTTP {status} "
                           "to its health check: check the URL, and MLFLOW_TRACKING_USERNAME/"
                           "MLFLOW_TRACKING_PASSWORD if it asks for a login")


def check_prefect_api() -> None:
    """With ``PREFECT_API_URL`` set, the Prefect server must answer; without it, Prefect's
    temporary API is started now (``start_temporary_prefect``), before any work."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        start_temporary_prefect()
        return
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health",  # noqa: S310
                                    timeout=CONNECT_TIMEOUT_S) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise ServiceError(f"cannot reach the Prefect server at PREFECT_API_URL={mask_url(url)} "
                       f"({reason}): start it, or unset PREFECT_API_URL to run locally")


def start_temporary_prefect(attempts: int = 2) -> None:
    """Start Prefect's temporary API (the one a flow starts without ``PREFECT_API_URL``) now,
    allowing it ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (bitfit's default 180: on
    a fresh ``PREFECT_HOME`` it first builds its database, over 20 s on a busy 2-core machine)
    and a second try with a fresh process; the flow then finds it running. One sentence if it
    never answers."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    timeout = settings.server.ephemeral.startup_timeout_seconds
    reason = ""
    for _ in range(attempts):
        server = SubprocessASGIServer()
        try:
            server.start(timeout=timeout)
            return
        except RuntimeError as err:
            reason = _first_line(err).split(" stdout:")[0].rstrip(".")
            server.stop()  # its process, and the instance a flow would reuse
    raise ServiceError(f"Prefect's temporary API did not answer within {timeout} s, "
                       f"{attempts} times ({reason}): raise "
                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start `prefect "
                       "server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _reason(err: BaseException) -> str:
    """The driver's own reason, without SQLAlchemy's boilerplate and links."""
    original = getattr(err, "orig", None) or err
    lines = [ln.strip() for ln in str(original).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("(Background", "[SQL", "http"))]
    failed = [ln.rsplit("failed:", 1)[1].strip() for ln in useful if "failed:" in ln]
    if failed:  # libpq: 'connection to server at "h", port p failed: Connection refused'
        return failed[0].rstrip(".")
    return (useful[-1] if useful else type(original).__name__).rstrip(".")


@contextlib.contextmanager
def store_lock(url: str) -> Iterator[None]:
    """Processes creating the same SQLite store take turns: its first schema migration races.

    Other stores (a server) serialise this themselves; there the block runs unlocked.
    """
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        yield
        return
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
