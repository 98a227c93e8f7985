"""The audit for Cinder admins: every volume, snapshot and backup of a cluster accounted for.

``model`` holds the finding kinds and the report schema, ``decide`` the pure comparison of what Cinder and
Kubernetes hold, ``collect`` gathers both through the ports (paginated lists with metadata filters), ``fix``
the safe cleanup of orphans (pure plan, re-check right before each delete), ``render`` the table / JSON /
CSV output. The CLI (``cinder-provisioner audit``) and the controller's periodic audit both use them.
"""
