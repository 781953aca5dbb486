"""DL3DV-10K formats: raw and benchmark scene folders, and webdataset shards of them."""
