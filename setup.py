from setuptools import find_packages, setup

setup(
    name="encdiff-pipeline",
    version="0.1.0",
    description="EncDiff: a diffusion autoencoder whose concept tokens learn disentangled factors, diffusers-native.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["encdiff_pipeline", "encdiff_pipeline.*"]) + ["encdiff_pipeline.model_cards"],
    # The model card templates live in the top-level `model_cards/` folder; a wheel installs them as
    # package data of `encdiff_pipeline.model_cards`.
    package_dir={"encdiff_pipeline.model_cards": "model_cards"},
    package_data={"encdiff_pipeline.model_cards": ["*.md"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "diffusers>=0.42,<0.43",
        "transformers",
        "accelerate",
        "safetensors",
        "huggingface-hub",
        "datasets",
        "numpy",
        "scipy",
        "scikit-learn",
        "pillow",
        "tqdm",
        "h5py",
        "matplotlib",
        "jinja2",
    ],
    extras_require={
        "tensorboard": ["tensorboard"],
        "wandb": ["wandb"],
        "dev": ["pytest", "pytest-timeout"],
    },
    entry_points={
        "console_scripts": [
            "encdiff-evaluate=encdiff_pipeline.evaluation:cli",
            "encdiff-sample-sheet=encdiff_pipeline.data.sample_sheet:main",
        ]
    },
)
