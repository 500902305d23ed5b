"""Generated gRPC stubs of proto/carto/v1/carto.proto (regen_proto.sh); do not edit."""
