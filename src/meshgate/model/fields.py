"""Field types shared by the resource models: each validates itself wherever it is used."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from meshgate.model.names import (
    check_instance_id,
    check_namespace,
    check_netns,
    check_node_name,
    check_resource_name,
)
from meshgate.model.values import check_port


def _optional_instance_id(value: str) -> str:
    return check_instance_id(value) if value else value  # empty: derived from the endpoint


ResourceName = Annotated[str, AfterValidator(check_resource_name)]
NamespaceName = Annotated[str, AfterValidator(check_namespace)]
PortNumber = Annotated[int, AfterValidator(check_port)]
InstanceId = Annotated[str, AfterValidator(_optional_instance_id)]
NetnsName = Annotated[str, AfterValidator(check_netns)]
NodeName = Annotated[str, AfterValidator(check_node_name)]
