#!/bin/sh
# Regenerates every PNG in this folder from its SVG source.
# Needs: rsvg-convert (Debian/Ubuntu: apt-get install librsvg2-bin)
#        optipng (optional, lossless size optimisation, keeps 8-bit RGBA: apt-get install optipng)
set -eu
cd "$(dirname "$0")"

r() { # r SIZE SRC.svg OUT.png
    rsvg-convert --width "$1" --height "$1" --keep-aspect-ratio -o "$3" "$2"
}

for f in os/*.svg; do
    b=${f%.svg}
    r 64 "$f" "$b.png"
    r 128 "$f" "$b@2x.png"
done

r 256 app/terrarium.svg app/terrarium.png
r 64 app/terrarium.svg app/terrarium-64.png

for f in app/state-*.svg; do
    r 32 "$f" "${f%.svg}.png"
done

if command -v optipng >/dev/null 2>&1; then
    optipng -quiet -o7 -nx -strip all os/*.png app/*.png
fi
