"""The one exception tree of Cove.

Every error knows its HTTP status and its Trove fault name, so the API maps any of them with a
single handler and the RPC layer can carry them across the bus by class name.
"""

from __future__ import annotations


class CoveError(Exception):
    """Base of every error Cove raises on purpose."""

    status: int = 500
    fault: str = "instanceFault"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])

    @property
    def public_message(self) -> str:
        """What a tenant is told: the message, unless its details are for operators only."""
        return self.message


class BadRequest(CoveError):
    """The request is malformed."""

    status = 400
    fault = "badRequest"


class ValidationFailed(BadRequest):
    """A field of the request is invalid."""


class Unauthorized(CoveError):
    """Authentication is required."""

    status = 401
    fault = "unauthorized"


class Forbidden(CoveError):
    """The request is not allowed."""

    status = 403
    fault = "forbidden"


class NotFound(CoveError):
    """The resource could not be found."""

    status = 404
    fault = "itemNotFound"


class InstanceNotFound(NotFound):
    """The instance could not be found."""


class ClusterNotFound(NotFound):
    """The cluster does not exist or is not visible to the caller."""


class BackupNotFound(NotFound):
    """The backup does not exist or is not visible to the caller."""


class BackupScheduleNotFound(NotFound):
    """The backup schedule does not exist or is not visible to the caller."""


class FlavorNotFound(NotFound):
    """The flavor could not be found."""


class DatastoreNotFound(NotFound):
    """The datastore could not be found."""


class DatastoreVersionNotFound(NotFound):
    """The datastore version could not be found."""


class DatabaseNotFound(NotFound):
    """The database could not be found."""


class UserNotFound(NotFound):
    """The user could not be found."""


class NetworkNotFound(NotFound):
    """No such network."""


class MethodNotAllowed(CoveError):
    """The method is not allowed for this resource."""

    status = 405
    fault = "badMethod"


class Conflict(CoveError):
    """The request conflicts with the current state."""

    status = 409
    fault = "conflict"


class DatabaseAlreadyExists(BadRequest):
    """The database already exists."""


class UserAlreadyExists(BadRequest):
    """The user already exists."""


class OverLimit(CoveError):
    """A limit was exceeded."""

    status = 413
    fault = "overLimit"


class QuotaExceeded(OverLimit):
    """A project quota would be exceeded."""


class RateLimited(OverLimit):
    """Too many requests of one verb in a minute."""

    def __init__(self, message: str, retry_after: int, details: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.details = details


class VolumeSizeTooLarge(OverLimit):
    """The requested volume is larger than allowed."""


class Unprocessable(CoveError):
    """The request cannot be processed in the current state."""

    status = 422
    fault = "unprocessableEntity"


class InstanceNotReady(Unprocessable):
    """The instance is not ready for this action."""


class NotImplementedFault(CoveError):
    """The operation is not implemented."""

    status = 501
    fault = "notImplemented"


class OperationNotSupported(NotImplementedFault):
    """The datastore does not support this operation."""


class AddressPoolExhausted(CoveError):
    """No free address is left in the pool."""

    status = 503
    fault = "serviceUnavailable"


class ServiceUnavailable(CoveError):
    """A service Cove depends on is not reachable."""

    status = 503
    fault = "serviceUnavailable"


class RpcTimeout(ServiceUnavailable):
    """A remote call did not answer in time."""


class BusUnavailable(ServiceUnavailable):
    """The message bus cannot be reached."""

    @property
    def public_message(self) -> str:
        # The message names the bus (a URL, a socket path) and the reason: for the logs only.
        return "A service Cove depends on cannot be reached; try again later."


class UnknownMethod(CoveError):
    """The remote service has no such method."""


class InvalidArguments(CoveError):
    """An RPC's arguments or result do not have the types of its contract."""


class GuestError(CoveError):
    """The guest agent failed to carry out an operation."""


class RemoteError(CoveError):
    """A remote service failed with an error Cove does not know by name."""


class CommandFailed(CoveError):
    """An external command exited with an error."""


class UnsafePath(CoveError):
    """A path in an instance directory is not what Cove made there; Cove will not use it."""


class VolumeError(CoveError):
    """An instance's volume could not be made, mounted, grown or removed."""

    @property
    def public_message(self) -> str:
        # The details name host paths and tools' output: the operator's log has them.
        return "The instance's volume could not be prepared; the operator's log says why."


class ConfigurationError(CoveError):
    """The settings are invalid."""


class ArtifactMissing(CoveError):
    """A backup artifact is not in its store."""


class StoreUnavailable(CoveError):
    """The backup store cannot be reached or refused the operation (full, no permission)."""


class ArtifactDamaged(CoveError):
    """A backup artifact does not match what was recorded when it was made (changed, cut
    short, or sealed with another key): nothing is restored from it."""


class UnreadableTaskArgs(CoveError):
    """Sealed task arguments that do not open (another key, another row, a damaged value)."""


def _all_subclasses(cls: type[CoveError]) -> list[type[CoveError]]:
    out: list[type[CoveError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_class(name: str) -> type[CoveError] | None:
    """Return the Cove error class called ``name``, or None when there is none."""
    if name == CoveError.__name__:
        return CoveError
    for cls in _all_subclasses(CoveError):
        if cls.__name__ == name:
            return cls
    return None
