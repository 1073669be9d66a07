"""Label Studio, one floor beneath the backend and the connector: the one client (`client`) and
the task contract both speak (`task`: what a task holds, its item id, round and references, the
queries and predictions made from it; `candidates`: reading and writing its candidate options)."""
