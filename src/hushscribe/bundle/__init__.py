"""The offline install bundle: everything an air-gapped host needs to install hushscribe, built
on a connected machine (``hushscribe bundle create``) and checked anywhere (``hushscribe bundle
verify``, or the bundle's own ``verify_bundle.py`` with nothing but Python).

``verify`` is standalone (standard library only) and is copied into every bundle verbatim;
``install.sh`` and ``README.md`` are shipped with the package as templates."""
