module github.com/rdsvalet/rds-valet

go 1.26.8
