# A GPU worker: CUDA build of torch 2.14 with the matching torchvision 0.29.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir '.[worker]'
# One process per visible GPU; MNIST is mounted at /data.
CMD ["hpo", "worker", "--gpus", "all", "--device", "cuda", "--data-dir", "/data"]
