# routed: both plugin services and BIRD (routed-bgp) under supervisord, as the container's
# main process.
#   deploy/build-image.sh          (builds the local base image and wheels/, then this)
#   docker run -d --name routed --restart unless-stopped --net=host \
#     --cap-add NET_ADMIN --security-opt systempaths=unconfined \
#     -v /run/docker/plugins:/run/docker/plugins -v /var/lib/routed:/var/lib/routed \
#     -v /run/routed:/run/routed -v "$(command -v docker-proxy)":/usr/sbin/docker-proxy:ro \
#     routed:latest
# No registry is needed: BASE is a local image (deploy/build-base.sh: Debian bookworm
# minbase with python3, python3-venv, iproute2, iptables-nft, bird2), Python dependencies
# come from wheels/ prepared on the host (`pip wheel -w wheels .`), installed with --no-index.
ARG BASE=routed-base:bookworm

# The source tree without wheels/ (they are installed into the venv, not shipped twice).
FROM ${BASE} AS source
COPY . /src/
RUN rm -rf /src/wheels /src/.venv

FROM ${BASE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/opt/routed \
    PATH=/opt/routed/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Dependencies first: this layer is reused as long as wheels/ does not change.
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/routed/.venv \
    && /opt/routed/.venv/bin/pip install --no-cache-dir --no-index --find-links=/tmp/wheels \
       /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels

COPY --from=source /src/ /opt/routed/
WORKDIR /opt/routed

# Build-time smoke test: the services and the CLI import, supervisord runs, iptables is nft,
# BIRD is there for routed-bgp.
RUN python -c "import cherrypy, zmq, pyroute2, supervisor, ipam.service, netdriver.driver" \
    && python -c "import bgp.config, common.bird" \
    && supervisord --version \
    && bird --version \
    && python -m routedctl --help >/dev/null \
    && iptables --version | grep -q nf_tables \
    && ip -V

# The wrapper forwards SIGTERM to supervisord (orderly stop: BIRD, routed-net, then routed-ipam;
# about 3 s, under `docker stop`'s 10 s) and exits 1 if a service went FATAL.
STOPSIGNAL SIGTERM
CMD ["/opt/routed/deploy/run-supervisord.sh", "/opt/routed/supervisord.conf"]
