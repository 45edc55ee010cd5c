"""Errors that the command line turns into one clear line and a non-zero exit."""


def not_a_folder(path):
    """Why ``path`` cannot be read as a folder: 'folder not found', or that it is a file."""
    import os
    return "not a folder (a file)" if os.path.exists(path) else "folder not found"


def plural(count, word, many=None):
    """``count`` with ``word`` in its number: '1 image', '0 images', '2 classes'. ``many`` is
    the plural where it is not ``word`` + 's' (or + 'es' after s, x, sh): 'batches'.
    Every message that counts something says it through here."""
    if count == 1:
        return "1 {}".format(word)
    if many is None:
        many = word + ("es" if word.endswith(("s", "x", "sh")) else "s")
    return "{} {}".format(count, many)


def reason_of(path, error):
    """An image reader's one-line error less the ``path: `` it starts with, so that a line
    naming the file already does not name it twice, nor wrap the reason in parentheses
    (whose own parentheses then nested: '(not a regular file (a FIFO): ...)')."""
    error = str(error)
    return error[len(path) + 2:] if error.startswith(str(path) + ": ") else error


def os_error_line(error):
    """An OSError the command did not expect (a full disk, a permission refused, a read
    error) as one line: what went wrong and the file(s) it names, without errno's brackets:
    "No space left on device: 'out/model_best.pth.tar'"."""
    reason = error.strerror or str(error) or type(error).__name__
    names = [repr(str(name)) for name in (error.filename, error.filename2) if name is not None]
    return "{}: {}".format(reason, " -> ".join(names)) if names else reason


class OncoLensError(Exception):
    """Base class: its message is shown to the user as it is, on one line."""

    exit_code = 1


class UsageError(OncoLensError):
    """A flag or argument has a value the command cannot use."""

    exit_code = 2


class BundleError(OncoLensError):
    """A model bundle (model.json, labels.txt, model file) is missing or inconsistent."""


class ImageReadError(OncoLensError):
    """An image file could not be read or decoded."""


class ImageWriteError(OncoLensError):
    """An image (an annotated copy, an output frame) could not be written."""


class MissingDependency(OncoLensError):
    """An optional package that this feature needs is not installed."""

    def __init__(self, package, feature, hint=None):
        msg = "{} needs the Python package '{}', which is not installed".format(feature, package)
        if hint:
            msg += " ({})".format(hint)
        super(MissingDependency, self).__init__(msg)
        self.package = package
