"""The OpenAPI document in OGC API words: `/collections/{collectionId}/…`.

Our routes name the path parameter `layer`; OGC API Features names it `collectionId`, and GDAL's
OAPIF driver finds which query parameters (`filter-lang` among them) the items take only under
the path `/collections/{collectionId}/items`. Renaming the parameter in the document alone keeps
every URL the same while clients that read the document by the standard's names find them.
"""

PREFIX = "/collections/{layer}"
OGC_NAME = "collectionId"


def ogc_names(schema: dict) -> None:
    renamed = {}
    for path, operations in schema.get("paths", {}).items():
        if path.startswith(PREFIX):
            path = "/collections/{" + OGC_NAME + "}" + path[len(PREFIX):]
            for operation in operations.values():
                for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                    if parameter.get("in") == "path" and parameter.get("name") == "layer":
                        parameter["name"] = OGC_NAME
                        parameter.setdefault("description", "the layer id, as listed at /collections")
        renamed[path] = operations
    schema["paths"] = renamed
