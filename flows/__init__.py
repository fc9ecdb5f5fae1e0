"""Prefect 3 flows over the facegan library: prepare-celeba, train-dcgan, nightly-gallery."""
