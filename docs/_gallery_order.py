# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Order of the gallery examples (sphinx-gallery ``within_subsection_order``)."""

#: Examples in reading order; any other example comes after them, by name.
ORDER = [
    "plot_denoise_sample.py",
    "plot_cosmic_rays.py",
    "plot_photometry.py",
    "plot_real_pair.py",
    "plot_denoise_file.py",
    "plot_many_files.py",
    "plot_train_tiny.py",
]


class ExampleOrder:
    """Sort key: the position in `ORDER`, then the file name."""

    def __init__(self, src_dir=None):
        self.src_dir = src_dir

    def __repr__(self):
        return "ExampleOrder"

    def __call__(self, filename):
        position = ORDER.index(filename) if filename in ORDER else len(ORDER)
        return (position, filename)
