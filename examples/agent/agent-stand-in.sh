#!/bin/sh
# A scripted stand-in for a coding agent: it reads the prompt file it is given and "does the
# task" by recording it in CHANGES.md, so the example runs offline and the same way twice.
set -eu
prompt="$1"
title=$(sed -n 's/^# Task: //p' "$prompt" | head -n 1)
{
    echo "## $title"
    echo
    sed -n '/^## Acceptance criteria$/,/^$/{/^- /p}' "$prompt"
    echo
    echo "Conveyor-Task: $title"
} >> CHANGES.md
