"""Opening a configured cluster that was created from another cluster's backup (a clone).

A clone's HSMs restore the backed-up cluster's certificate (no new ceremony, spec
§10.1), so they present a certificate, and announce an identity, naming the cluster
the backup came from, while the configuration (``cloudhsm-configure add-cluster``)
names the clone by its own id. The channel's identity check then refuses them.

For such an entry the view is opened again with the identity taken from the HSMs'
certificate (still verified against ``customerCA.crt``, and still required to match what
the HSM announces) and every HSM is then asked which cluster it belongs to
(``hsm.info``, over the authenticated channel): only when each one answers the
configured cluster id is the view accepted. Anything else keeps the original refusal.
"""

from __future__ import annotations

import dataclasses

from client.cluster import ClusterView, channel_settings
from client.config import ClientConfig
from client.errors import ClientError, ClusterMismatch
from protocol.ops import Op


async def open_view(config: ClientConfig, cluster_id: str | None) -> ClusterView:
    """The view of the addressed cluster, accepting a clone under its own id."""
    try:
        return await ClusterView.open(config, cluster_id)
    except ClusterMismatch as mismatch:
        view = await _open_clone(config, cluster_id)
        if view is None:
            raise mismatch from None
        return view


async def _open_clone(config: ClientConfig, cluster_id: str | None) -> ClusterView | None:
    cluster = config.select(cluster_id)
    expected = cluster_id or cluster.cluster_id
    if expected is None:
        return None
    settings = dataclasses.replace(channel_settings(cluster), expected_cluster_id=None)
    view = ClusterView(
        cluster,
        settings,
        retry_mode=config.default_retry_mode,
        key_availability_check=not config.disable_key_availability_check,
    )
    try:
        await view.connect()
        outcomes = await view.fan_out(Op.HSM_INFO, {})
    except ClientError:
        await view.close()
        return None
    answers = [o.result for o in outcomes if o.ok and isinstance(o.result, dict)]
    if len(answers) != len(outcomes) or any(a.get("cluster-id") != expected for a in answers):
        await view.close()
        return None
    return view
