#!/bin/sh
# Install the WordNet 3.0 database for NLTK (METEOR needs it) without NLTK's network downloader.
#
# Usage: scripts/install_wordnet.sh [NLTK_DATA_DIR]      (default: .venv/nltk_data)
#
# The files come from Debian's `wordnet-base` and `wordnet-sense-index` packages: an installed copy in
# /usr/share/wordnet is used when present; otherwise the two .deb files are fetched with
# `apt-get download` (an ordinary package-registry download, nothing is installed system-wide) and
# unpacked with `dpkg-deb -x`. Debian does not ship the `lexnames` file NLTK reads, so it is written
# here from WordNet 3.0's list of lexicographer files (lexnames(5WN)). NLTK searches
# <venv>/nltk_data by itself, so no environment variable is needed for the project's venv.
set -eu

DEST=${1:-.venv/nltk_data}
WN="$DEST/corpora/wordnet"
if [ -f "$WN/data.noun" ] && [ -f "$WN/index.sense" ] && [ -f "$WN/lexnames" ]; then
    echo "WordNet already installed in $WN"
    exit 0
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

if [ -f /usr/share/wordnet/data.noun ] && [ -f /usr/share/wordnet/index.sense ]; then
    SRC=/usr/share/wordnet
else
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
        echo "install_wordnet: needs apt-get and dpkg-deb (Debian/Ubuntu), or the wordnet-base and" \
             "wordnet-sense-index packages installed" >&2
        exit 1
    fi
    fetch() { (cd "$TMP" && apt-get download wordnet-base wordnet-sense-index >/dev/null 2>&1); }
    if ! fetch; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq >/dev/null 2>&1 || true
            fetch || { echo "install_wordnet: apt-get download wordnet-base wordnet-sense-index failed" >&2; exit 1; }
        else
            echo "install_wordnet: apt-get download failed; run 'sudo apt-get update' first, or" \
                 "'sudo apt-get install wordnet-base wordnet-sense-index'" >&2
            exit 1
        fi
    fi
    for deb in "$TMP"/*.deb; do dpkg-deb -x "$deb" "$TMP/root"; done
    SRC="$TMP/root/usr/share/wordnet"
fi

STAGE="$TMP/wordnet"
mkdir -p "$STAGE"
for f in data.adj data.adv data.noun data.verb index.adj index.adv index.noun index.verb index.sense \
         adj.exc adv.exc noun.exc verb.exc cntlist.rev; do
    [ -f "$SRC/$f" ] || { echo "install_wordnet: $SRC/$f is missing" >&2; exit 1; }
    cp "$SRC/$f" "$STAGE/$f"
done
# lexnames: file number, lexicographer file, syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb).
i=0
for entry in adj.all:3 adj.pert:3 adv.all:4 noun.Tops:1 noun.act:1 noun.animal:1 noun.artifact:1 \
             noun.attribute:1 noun.body:1 noun.cognition:1 noun.communication:1 noun.event:1 noun.feeling:1 \
             noun.food:1 noun.group:1 noun.location:1 noun.motive:1 noun.object:1 noun.person:1 \
             noun.phenomenon:1 noun.plant:1 noun.possession:1 noun.process:1 noun.quantity:1 noun.relation:1 \
             noun.shape:1 noun.state:1 noun.substance:1 noun.time:1 verb.body:2 verb.change:2 verb.cognition:2 \
             verb.communication:2 verb.competition:2 verb.consumption:2 verb.contact:2 verb.creation:2 \
             verb.emotion:2 verb.motion:2 verb.perception:2 verb.possession:2 verb.social:2 verb.stative:2 \
             verb.weather:2 adj.ppl:3; do
    printf '%02d\t%s\t%s\n' "$i" "${entry%:*}" "${entry#*:}" >> "$STAGE/lexnames"
    i=$((i + 1))
done

mkdir -p "$DEST/corpora"
rm -rf "$WN"
mv "$STAGE" "$WN"
echo "WordNet 3.0 installed in $WN"
