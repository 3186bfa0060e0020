"""What are these bytes? Classification by magic bytes against the API's table of types
and limits, with the sniffers that refine ``filetype``.
"""
