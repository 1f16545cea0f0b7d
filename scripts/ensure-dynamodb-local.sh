#!/usr/bin/env bash
# Makes sure DynamoDB Local (Amazon's emulator, a Java program) is unpacked where
# cutover-testkit looks for it: ~/.cache/cutover-test-tools/dynamodb-local/package/emulator
# (or $CUTOVER_DYNAMODB_LOCAL). It comes from the npm package amplify-dynamodb-simulator,
# fetched with `npm pack` into that cache (never into the repository), and needs Java 17.
# Quiet and quick when everything is there; says what it does otherwise.
set -euo pipefail
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test-tools/dynamodb-local
dir=${CUTOVER_DYNAMODB_LOCAL:-$cache/package/emulator}
version=2.9.30

if ! command -v java >/dev/null 2>&1; then
    echo "ensure-dynamodb-local: installing Java 17 (openjdk-17-jre-headless)" >&2
    if [[ $(id -u) -eq 0 ]]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y openjdk-17-jre-headless
fi

[[ -f $dir/DynamoDBLocal.jar ]] && exit 0
if [[ -n ${CUTOVER_DYNAMODB_LOCAL:-} ]]; then
    echo "ensure-dynamodb-local: CUTOVER_DYNAMODB_LOCAL=$dir holds no DynamoDBLocal.jar" >&2
    exit 1
fi
echo "ensure-dynamodb-local: fetching amplify-dynamodb-simulator@$version (DynamoDB Local) into $cache" >&2
mkdir -p "$cache"
cd "$cache"
npm pack --silent "amplify-dynamodb-simulator@$version" >/dev/null
tar xzf "amplify-dynamodb-simulator-$version.tgz"
rm -f "amplify-dynamodb-simulator-$version.tgz"
[[ -f $dir/DynamoDBLocal.jar ]] || { echo "ensure-dynamodb-local: no DynamoDBLocal.jar in the package" >&2; exit 1; }
