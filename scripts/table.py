"""The DynamoDB table, as template.yaml defines it: the one source of truth for its schema.

Usage:
  table.py definition                       print the CreateTable input (JSON) read from template.yaml
  table.py stream-filters                   print the cleanup function's stream filter patterns (JSON list)
  table.py create --endpoint URL --name N   (re)create table N on a local DynamoDB API
  table.py dump --endpoint URL --name N     print every item, readably, grouped by partition

The test suite reads `definition` and `stream-filters` output; the local loop uses `create` and `dump`.
"""

import argparse
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
TABLE_RESOURCE = "Table"
SCHEMA_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode", "StreamSpecification")


class CloudFormationLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub, ...) as plain values."""


def _tagged(loader, _suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


CloudFormationLoader.add_multi_constructor("!", _tagged)


def definition():
    template = yaml.load(TEMPLATE.read_text(), Loader=CloudFormationLoader)
    properties = template["Resources"][TABLE_RESOURCE]["Properties"]
    missing = [key for key in SCHEMA_KEYS if key not in properties]
    if missing:
        sys.exit(f"template.yaml: Resources.{TABLE_RESOURCE}.Properties lacks {', '.join(missing)}")
    schema = {key: properties[key] for key in SCHEMA_KEYS}
    # CloudFormation enables the stream by naming its view type; the API says so explicitly.
    schema["StreamSpecification"] = {"StreamEnabled": True, **schema["StreamSpecification"]}
    return schema


def stream_filters():
    """The filter patterns of every function event reading the table's stream, parsed."""
    template = yaml.load(TEMPLATE.read_text(), Loader=CloudFormationLoader)
    patterns = []
    for resource in template["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in resource.get("Properties", {}).get("Events", {}).values():
            properties = event.get("Properties", {})
            if event.get("Type") != "DynamoDB" or TABLE_RESOURCE not in str(properties.get("Stream")):
                continue
            filters = properties.get("FilterCriteria", {}).get("Filters", [])
            patterns.extend(json.loads(f["Pattern"]) for f in filters)
    if not patterns:
        sys.exit("template.yaml: no function reads the table's stream through a filter")
    return patterns


def client(endpoint):
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def create(endpoint, name):
    dynamodb = client(endpoint)
    if name in dynamodb.list_tables()["TableNames"]:
        dynamodb.delete_table(TableName=name)
    dynamodb.create_table(TableName=name, **definition())
    print(f"created table {name} from template.yaml")


def plain(value):
    """An attribute value as plain JSON."""
    (kind, inner), = value.items()
    if kind == "M":
        return {k: plain(v) for k, v in inner.items()}
    if kind == "L":
        return [plain(v) for v in inner]
    if kind == "N":
        return int(inner) if inner.lstrip("-").isdigit() else float(inner)
    if kind == "NULL":
        return None
    return inner


def dump(endpoint, name):
    dynamodb = client(endpoint)
    items = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=name):
        items.extend({k: plain(v) for k, v in item.items()} for item in page["Items"])
    items.sort(key=lambda item: (item["pk"], item["sk"]))
    print(f"{len(items)} item(s) in {name}:")
    for item in items:
        summary = {k: v for k, v in item.items() if k not in ("pk", "sk", "data")}
        kept = " (+ Clerk object under data)" if "data" in item else ""
        print(f"  {item['pk']} | {item['sk']}{kept}")
        print("    " + json.dumps(summary, sort_keys=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["definition", "stream-filters", "create", "dump"])
    parser.add_argument("--endpoint")
    parser.add_argument("--name")
    args = parser.parse_args()
    if args.command in ("definition", "stream-filters"):
        json.dump(definition() if args.command == "definition" else stream_filters(), sys.stdout, indent=2)
        print()
        return
    if not (args.endpoint and args.name):
        parser.error(f"{args.command} needs --endpoint and --name")
    (create if args.command == "create" else dump)(args.endpoint, args.name)


if __name__ == "__main__":
    main()
