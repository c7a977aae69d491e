# Atelier on a GPU host. Built with the official PyTorch CUDA runtime image.
# Not built on the development machines (no Docker engine there); kept conventional on purpose.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_HOME=/opt/torch \
    ATELIER_DATA_DIR=/data \
    ATELIER_DEVICE=auto

WORKDIR /app

# Dependencies first, so code changes do not reinstall them. torch and torchvision come with
# the base image and satisfy the open ranges in pyproject.toml.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
RUN pip install --no-cache-dir ".[scale]"

# The VGG-19 ImageNet weights, downloaded (hash-checked) at build time into the image's torch
# cache, so the container starts without network access to the weights host.
RUN python -m engine fetch-weights && chmod -R a+rX /opt/torch

RUN useradd --create-home --uid 10001 atelier \
    && mkdir -p /data && chown atelier:atelier /data
USER atelier
VOLUME ["/data"]

CMD ["python", "-m", "bot"]
