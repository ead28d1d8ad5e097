"""Video-R4: visual-rumination data curation and training for text-rich video QA.

The four parts live in top-level folders of the repository and are installed
under this one namespace (``videor4.curation``, ``videor4.pipelines``,
``videor4.annotation``, ``videor4.training``) so nothing generic such as
``training`` lands in site-packages.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("video-r4")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
