# policy-pubsub: build a wheel in one stage, run it as an unprivileged user in the next.
# The image is the server (its wheel includes the SDK); a component installs the SDK alone
# from sdk/ (`pip install ./sdk`, README "For component authors"), not from this image.
#   docker build -t policy-pubsub .
#   docker run -p 6969:6969 -v pp-data:/data \
#     -v "$PWD/auth.toml:/etc/policy-pubsub/auth.toml:ro" policy-pubsub
# Off loopback the server wants an auth file (examples/auth.toml shows one); it refuses to
# start without it.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir build
COPY pyproject.toml README.md ./
COPY policy_pubsub ./policy_pubsub
COPY schemas ./schemas
RUN python -m build --wheel --outdir /wheels

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home policy-pubsub
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir "$(ls /wheels/*.whl)" && rm -rf /wheels
USER policy-pubsub
WORKDIR /data
VOLUME ["/data"]
ENV POLICY_PUBSUB_DATABASE_URL=sqlite+aiosqlite:////data/policy-pubsub.db \
    POLICY_PUBSUB_AUTH_FILE=/etc/policy-pubsub/auth.toml
EXPOSE 6969
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:6969/healthcheck', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["policy-pubsub"]
CMD ["serve", "--host", "0.0.0.0"]
