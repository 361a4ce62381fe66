"""The lab: replicas as real local processes with a Kubernetes pod's lifecycle, the kubelet's probes and handlers, the Deployment controller, and manifests."""
