"""Joint network + accelerator search (NAAS-style co-design): :mod:`edgenas.codesign.space`."""
