"""mko: power orchestration for MicroK8s clusters."""

__version__ = "0.1.0"
